"""Physical RAM backing store with provenance.

RAM is sparse: a byte that was never written reads 0 and has no writer.  Every written byte
remembers who wrote it (``firmware``, ``os``, ``dma``, ``cpu`` for state the processor saves on
SMI entry, ``fw_cfg`` for the device's DMA, ``qtest``).  Besides plain bytes, RAM can hold
*objects* that stand for bytes whose meaning the model keeps symbolically:

* ``code`` objects: a program installed at an address (what a CPU fetches and executes);
* ``sym`` objects: opaque saved processor state (the save-state map's register image).

Writing plain bytes over part of an object changes its provenance: a code object that anyone
else scribbles on becomes code *of that writer*, and a symbolic save-state image becomes plain
bytes.  The value is immutable and hashable; its hash is maintained incrementally so the
checker can hash millions of states cheaply.
"""

from __future__ import annotations

from typing import NamedTuple


class Obj(NamedTuple):
    """A symbolic object occupying ``size`` bytes of RAM."""

    kind: str  # "code" | "sym"
    value: object  # program name for code; any hashable value for sym
    size: int
    writer: str


_Byte = tuple[int, str]


class Memory:
    """Immutable sparse RAM.  All updates return a new ``Memory``."""

    __slots__ = ("_bytes", "_hash", "_objs")

    def __init__(
        self,
        data: dict[int, _Byte] | None = None,
        objs: dict[int, Obj] | None = None,
        h: int = 0,
    ) -> None:
        self._bytes: dict[int, _Byte] = data if data is not None else {}
        self._objs: dict[int, Obj] = objs if objs is not None else {}
        self._hash = h

    # -- value semantics -------------------------------------------------------------------
    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Memory):
            return NotImplemented
        return self._hash == other._hash and self._bytes == other._bytes and self._objs == other._objs

    def __repr__(self) -> str:
        return f"Memory({len(self._bytes)} bytes, {len(self._objs)} objects)"

    # -- reads -----------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> int:
        """Little-endian read of ``size`` bytes; unwritten bytes read 0."""
        b = self._bytes
        value = 0
        for i in range(size):
            cell = b.get(addr + i)
            if cell is not None:
                value |= cell[0] << (8 * i)
        return value

    def writer(self, addr: int) -> str | None:
        cell = self._bytes.get(addr)
        if cell is not None:
            return cell[1]
        obj = self.object_covering(addr)
        return obj.writer if obj is not None else None

    def object_at(self, addr: int) -> Obj | None:
        """The object whose first byte is ``addr``."""
        return self._objs.get(addr)

    def object_covering(self, addr: int) -> Obj | None:
        for base, obj in self._objs.items():
            if base <= addr < base + obj.size:
                return obj
        return None

    def objects(self) -> list[tuple[int, Obj]]:
        return sorted(self._objs.items())

    def written(self) -> list[tuple[int, int, str]]:
        """Every written byte as (address, value, writer), in address order."""
        return sorted((a, v, w) for a, (v, w) in self._bytes.items())

    # -- writes ----------------------------------------------------------------------------
    def write(self, addr: int, size: int, value: int, writer: str) -> Memory:
        """Little-endian write of ``size`` bytes of ``value`` by ``writer``."""
        data = dict(self._bytes)
        h = self._hash
        for i in range(size):
            a = addr + i
            new = ((value >> (8 * i)) & 0xFF, writer)
            old = data.get(a)
            if old == new:
                continue
            if old is not None:
                h ^= hash((a, old))
            h ^= hash((a, new))
            data[a] = new
        objs, h = self._taint_objects(addr, size, writer, h)
        return Memory(data, objs, h)

    def fill(self, addr: int, size: int, byte: int, writer: str) -> Memory:
        data = dict(self._bytes)
        h = self._hash
        new = (byte & 0xFF, writer)
        for a in range(addr, addr + size):
            old = data.get(a)
            if old == new:
                continue
            if old is not None:
                h ^= hash((a, old))
            h ^= hash((a, new))
            data[a] = new
        objs, h = self._taint_objects(addr, size, writer, h)
        return Memory(data, objs, h)

    def put(self, addr: int, obj: Obj) -> Memory:
        """Place ``obj`` at ``addr``; it replaces whatever bytes and objects it overlaps."""
        data = self._bytes
        h = self._hash
        end = addr + obj.size
        covered = [a for a in data if addr <= a < end] if data else []
        if covered:
            data = dict(data)
            for a in covered:
                h ^= hash((a, data.pop(a)))
        objs = dict(self._objs)
        for base, old in list(objs.items()):
            if base < end and addr < base + old.size:
                h ^= hash((base, old))
                del objs[base]
        objs[addr] = obj
        h ^= hash((addr, obj))
        return Memory(data, objs, h)

    def _taint_objects(self, addr: int, size: int, writer: str, h: int) -> tuple[dict[int, Obj], int]:
        objs = self._objs
        if not objs:
            return objs, h
        end = addr + size
        hit = [b for b, o in objs.items() if b < end and addr < b + o.size]
        if not hit:
            return objs, h
        objs = dict(objs)
        for base in hit:
            old = objs.pop(base)
            h ^= hash((base, old))
            if old.kind == "code" and old.writer != writer:
                # Someone else's bytes inside a program: it is now their code.
                new = old._replace(writer=writer)
                objs[base] = new
                h ^= hash((base, new))
            elif old.kind == "code":
                objs[base] = old
                h ^= hash((base, old))
            # A symbolic register image overwritten with plain bytes simply becomes bytes.
        return objs, h
