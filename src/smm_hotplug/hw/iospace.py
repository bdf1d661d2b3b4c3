"""How an access of N bytes reaches device registers, as QEMU's memory core does it.

An access is cut at region boundaries; inside a region it is cut to the region's largest valid
size and to the alignment of the address (memory_access_size in QEMU's physmem.c).  A piece
whose size the region does not accept reads 0 and writes nothing
(memory_region_dispatch_read/write); an accepted piece is split again into the sizes the device
implements (access_with_adjusted_size in memory.c).  Ports no region claims read all-ones
(unassigned_io_ops).  Getting this right is what makes narrow, wide and straddling accesses
answer exactly as QEMU does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A device's handlers (hw.effects): pure functions of the device state and its links.
DeviceRead = Callable[
    [Any, Any, int, int], tuple[Any, int, Any]
]  # (state, links, off, size) -> (state, value, effects)
DeviceWrite = Callable[
    [Any, Any, int, int, int], tuple[Any, Any]
]  # (state, links, off, size, value) -> (state, effects)
# What the dispatcher calls: the machine's adapter around a device's handlers.
ReadFn = Callable[[Any, int, int], tuple[Any, int]]  # (access, offset, size) -> (access, value)
WriteFn = Callable[[Any, int, int, int], Any]  # (access, offset, size, value) -> access


@dataclass(frozen=True)
class Ops:
    """A device's register block as the bus sees it (QEMU's MemoryRegionOps): its name and
    length, its read and write handlers, and the access sizes it accepts (``valid``) and
    implements (``impl``).  The device declares it; the machine decides where it is mapped."""

    name: str
    size: int
    read: DeviceRead
    write: DeviceWrite
    valid_min: int = 1
    valid_max: int = 4
    impl_min: int = 1
    impl_max: int = 4
    big_endian: bool = False
    # Extra validity rule (e.g. fw_cfg: 16-bit accesses only as selector writes at offset 0).
    accepts: Callable[[int, int, bool], bool] | None = None


@dataclass(frozen=True)
class Region:
    """``ops`` mapped at ``base``; ``read``/``write`` are what the dispatcher calls."""

    base: int
    ops: Ops
    read: ReadFn
    write: WriteFn

    @property
    def name(self) -> str:
        return self.ops.name

    @property
    def size(self) -> int:
        return self.ops.size


def _pow2floor(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def _piece_size(ops: Ops, offset: int, length: int) -> int:
    limit = ops.valid_max
    align = offset & -offset
    if align and align < limit:
        limit = align
    return _pow2floor(min(length, limit))


def _valid(ops: Ops, offset: int, size: int, is_write: bool) -> bool:
    if size < ops.valid_min or size > ops.valid_max:
        return False
    return not (ops.accepts is not None and not ops.accepts(offset, size, is_write))


def _impl_read(region: Region, state: Any, offset: int, size: int) -> tuple[Any, int]:
    ops = region.ops
    step = max(min(size, ops.impl_max), ops.impl_min)
    mask = (1 << (8 * step)) - 1
    value = 0
    for i in range(0, size, step):
        state, part = region.read(state, offset + i, step)
        shift = (size - step - i) * 8 if ops.big_endian else i * 8
        value |= (part & mask) << shift
    return state, value & ((1 << (8 * size)) - 1)


def _impl_write(region: Region, state: Any, offset: int, size: int, value: int) -> Any:
    ops = region.ops
    step = max(min(size, ops.impl_max), ops.impl_min)
    mask = (1 << (8 * step)) - 1
    for i in range(0, size, step):
        shift = (size - step - i) * 8 if ops.big_endian else i * 8
        state = region.write(state, offset + i, step, (value >> shift) & mask)
    return state


def _byteswap(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "little"), "big")


class IoSpace:
    """A set of non-overlapping regions over a flat address space, with all-ones default."""

    def __init__(self, regions: list[Region], unassigned_byte: int = 0xFF) -> None:
        self.regions = sorted(regions, key=lambda r: r.base)
        self.unassigned_byte = unassigned_byte
        self._found: dict[int, tuple[Region | None, int]] = {}  # _find's answers: the map is fixed

    def _find(self, addr: int) -> tuple[Region | None, int]:
        """The region holding ``addr``, or None and the distance to the next region."""
        got = self._found.get(addr)
        if got is None:
            got = self._found[addr] = self._search(addr)
        return got

    def _search(self, addr: int) -> tuple[Region | None, int]:
        nxt = 1 << 64
        for r in self.regions:
            if r.base <= addr < r.base + r.size:
                return r, r.base + r.size - addr
            if r.base > addr:
                nxt = min(nxt, r.base - addr)
        return None, nxt

    def read(self, state: Any, addr: int, size: int) -> tuple[Any, int]:
        value = 0
        done = 0
        while done < size:
            a = addr + done
            region, room = self._find(a)
            length = min(size - done, room)
            if region is None:
                piece = _pow2floor(min(length, 4))
                part = int.from_bytes(bytes([self.unassigned_byte]) * piece, "little")
            else:
                offset = a - region.base
                piece = _piece_size(region.ops, offset, length)
                if _valid(region.ops, offset, piece, False):
                    state, part = _impl_read(region, state, offset, piece)
                    if region.ops.big_endian:
                        part = _byteswap(part, piece)
                else:
                    part = 0
            value |= part << (8 * done)
            done += piece
        return state, value

    def write(self, state: Any, addr: int, size: int, value: int) -> Any:
        done = 0
        while done < size:
            a = addr + done
            region, room = self._find(a)
            length = min(size - done, room)
            if region is None:
                done += _pow2floor(min(length, 4))
                continue
            offset = a - region.base
            piece = _piece_size(region.ops, offset, length)
            part = (value >> (8 * done)) & ((1 << (8 * piece)) - 1)
            if _valid(region.ops, offset, piece, True):
                if region.ops.big_endian:
                    part = _byteswap(part, piece)
                state = _impl_write(region, state, offset, piece, part)
            done += piece
        return state
