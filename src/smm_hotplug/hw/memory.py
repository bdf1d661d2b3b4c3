"""Physical RAM backing store with provenance.

RAM is sparse: a byte that was never written reads 0 and has no writer.  Every written byte
remembers who wrote it (``firmware``, ``os``, ``dma``, ``cpu`` for state the processor saves on
SMI entry, ``fw_cfg`` for the device's DMA, ``qtest``).  Besides plain bytes, RAM can hold
*objects* that stand for bytes whose meaning the model keeps symbolically:

* ``code`` objects: a program installed at an address (what a CPU fetches and executes);
* ``sym`` objects: opaque saved processor state (the save-state map's register image).

Writing plain bytes over part of an object changes its provenance: a code object that anyone
else scribbles on becomes code *of that writer*, and a symbolic save-state image becomes plain
bytes.

The value is immutable and hashable.  Bytes live in 256-byte pages shared between states; a
write copies one page, and the hash is kept incrementally, so the checker can hash and copy
millions of states cheaply.
"""

from __future__ import annotations

from collections.abc import ItemsView
from typing import NamedTuple

PAGE_SHIFT = 8
PAGE = 1 << PAGE_SHIFT
_ZERO = bytes(PAGE)
_NOBODY = bytes(PAGE)  # writer code 0: never written

# Writers are kept one byte per RAM byte, as small codes (a page copy is then two 256-byte
# strings, not a tuple of 256 references); code 0 is "nobody".
_WRITER_CODES: dict[str, int] = {}
_WRITERS: list[str | None] = [None]


def _code(writer: str) -> int:
    code = _WRITER_CODES.get(writer)
    if code is None:
        if len(_WRITERS) > 255:
            raise ValueError("more than 255 distinct writers")
        code = _WRITER_CODES[writer] = len(_WRITERS)
        _WRITERS.append(writer)
    return code


def canonical_page(page: Page) -> tuple[bytes, bytes, tuple[str, ...]]:
    """``page`` as every process spells it: its bytes, each byte's writer as a number into the
    page's writers' names in sorted order (0: nobody), and those names.  Writer codes are this
    process's own (handed out as writers first appear), so a copy of RAM for another process,
    or a name of its content that must be the same in every process, uses this form."""
    codes = set(page.writers)
    codes.discard(0)
    names = sorted(str(_WRITERS[c]) for c in codes)
    if not names:
        return page.data, page.writers, ()
    table = bytearray(256)
    for i, n in enumerate(names):
        table[_WRITER_CODES[n]] = i + 1
    return page.data, page.writers.translate(table), tuple(names)


def page_from_canonical(data: bytes, writers: bytes, names: tuple[str, ...]) -> Page:
    """The page ``canonical_page`` spelled so, in this process's writer codes."""
    if names:
        table = bytes([0, *(_code(n) for n in names)]).ljust(256, b"\0")
        writers = writers.translate(table)
    return Page(data, writers)


def _restore(pages: tuple, objs: tuple) -> Memory:
    """``Memory.__reduce__``'s copy, in this process's writer codes and hash."""
    page_map = {pno: page_from_canonical(data, writers, names) for pno, data, writers, names in pages}
    return Memory.from_pages(page_map, dict(objs))


class Obj(NamedTuple):
    """A symbolic object occupying ``size`` bytes of RAM."""

    kind: str  # "code" | "sym"
    value: object  # program name for code; any hashable value for sym
    size: int
    writer: str


class Page(NamedTuple):
    data: bytes
    writers: bytes  # writer code of every byte (see _code)


class Memory:
    """Immutable sparse RAM.  All updates return a new ``Memory``."""

    __slots__ = ("_hash", "_objs", "_pages")

    def __init__(
        self,
        pages: dict[int, Page] | None = None,
        objs: dict[int, Obj] | None = None,
        h: int = 0,
    ) -> None:
        self._pages: dict[int, Page] = pages if pages is not None else {}
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
        return self._hash == other._hash and self._pages == other._pages and self._objs == other._objs

    def __repr__(self) -> str:
        return f"Memory({len(self._pages)} pages, {len(self._objs)} objects)"

    def __reduce__(self) -> tuple:
        """A copy for another process: each page in its canonical form (``canonical_page``),
        and the receiver recomputes writer codes and hash (``hash`` is salted per process).
        Pages and objects are listed in address order, so equal memories give equal copies in
        every process."""
        pages = tuple((pno, *canonical_page(self._pages[pno])) for pno in sorted(self._pages))
        return (_restore, (pages, tuple(sorted(self._objs.items()))))

    @classmethod
    def from_pages(cls, pages: dict[int, Page], objs: dict[int, Obj]) -> Memory:
        """RAM holding these pages and objects (e.g. rebuilt from a copy: ``page_from_canonical``)."""
        h = 0
        for pno, page in pages.items():
            h ^= hash((pno, page))
        for base, obj in objs.items():
            h ^= hash((base, obj))
        return cls(pages, objs, h)

    def pages(self) -> ItemsView[int, Page]:
        """The written pages, (page number, page), in no particular order."""
        return self._pages.items()

    def objects(self) -> ItemsView[int, Obj]:
        """The objects, (address, object), in no particular order."""
        return self._objs.items()

    # -- reads -----------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> int:
        """Little-endian read of ``size`` bytes; unwritten bytes read 0."""
        pages = self._pages
        off = addr & (PAGE - 1)
        if off + size <= PAGE:
            page = pages.get(addr >> PAGE_SHIFT)
            if page is None:
                return 0
            return int.from_bytes(page.data[off : off + size], "little")
        out = bytearray()
        a = addr
        end = addr + size
        while a < end:
            off = a & (PAGE - 1)
            n = min(PAGE - off, end - a)
            page = pages.get(a >> PAGE_SHIFT)
            out += page.data[off : off + n] if page is not None else bytes(n)
            a += n
        return int.from_bytes(out, "little")

    def writer(self, addr: int) -> str | None:
        page = self._pages.get(addr >> PAGE_SHIFT)
        if page is not None:
            w = page.writers[addr & (PAGE - 1)]
            if w:
                return _WRITERS[w]
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

    # -- writes ----------------------------------------------------------------------------
    def write(self, addr: int, size: int, value: int, writer: str) -> Memory:
        """Little-endian write of ``size`` bytes of ``value`` by ``writer``."""
        return self._store(addr, value.to_bytes(size, "little"), writer)

    def _store(self, addr: int, blob: bytes, writer: str) -> Memory:
        pages = dict(self._pages)
        code = _code(writer)
        h = self._hash
        a = addr
        end = addr + len(blob)
        pos = 0
        changed = False
        while a < end:
            pno = a >> PAGE_SHIFT
            off = a & (PAGE - 1)
            n = min(PAGE - off, end - a)
            old = pages.get(pno)
            data = bytearray(old.data if old is not None else _ZERO)
            writers = bytearray(old.writers if old is not None else _NOBODY)
            data[off : off + n] = blob[pos : pos + n]
            writers[off : off + n] = bytes((code,)) * n
            new = Page(bytes(data), bytes(writers))
            if new != old:
                if old is not None:
                    h ^= hash((pno, old))
                h ^= hash((pno, new))
                pages[pno] = new
                changed = True
            a += n
            pos += n
        objs, h2 = self._taint_objects(addr, len(blob), writer, h)
        if not changed and objs is self._objs:
            return self
        return Memory(pages if changed else self._pages, objs, h2)

    def erase(self, addr: int, size: int) -> Memory:
        """Zero a range and forget its authors (and any objects in it)."""
        pages = dict(self._pages)
        objs = dict(self._objs)
        h = self._hash
        end = addr + size
        for base, obj in list(objs.items()):
            if base < end and addr < base + obj.size:
                h ^= hash((base, obj))
                del objs[base]
        for pno in [p for p in pages if addr < (p + 1) << PAGE_SHIFT and p << PAGE_SHIFT < end]:
            old = pages.pop(pno)
            h ^= hash((pno, old))
            lo = max(addr, pno << PAGE_SHIFT) - (pno << PAGE_SHIFT)
            hi = min(end, (pno + 1) << PAGE_SHIFT) - (pno << PAGE_SHIFT)
            if lo == 0 and hi == PAGE:
                continue
            data = bytearray(old.data)
            writers = bytearray(old.writers)
            data[lo:hi] = bytes(hi - lo)
            writers[lo:hi] = bytes(hi - lo)
            if writers.count(0) != PAGE:
                new = Page(bytes(data), bytes(writers))
                pages[pno] = new
                h ^= hash((pno, new))
        return Memory(pages, objs, h)

    def put(self, addr: int, obj: Obj) -> Memory:
        """Place ``obj`` at ``addr``; it replaces whatever bytes and objects it overlaps."""
        h = self._hash
        end = addr + obj.size
        pages = self._pages
        a = addr & ~(PAGE - 1)
        copied = False
        while a < end:
            pno = a >> PAGE_SHIFT
            old = pages.get(pno)
            if old is not None:
                lo = max(addr, a) - a
                hi = min(end, a + PAGE) - a
                if old.writers[lo:hi].count(0) != hi - lo:
                    if not copied:
                        pages = dict(pages)
                        copied = True
                    data = bytearray(old.data)
                    writers = bytearray(old.writers)
                    data[lo:hi] = bytes(hi - lo)
                    writers[lo:hi] = bytes(hi - lo)
                    h ^= hash((pno, old))
                    if writers.count(0) != PAGE:
                        new = Page(bytes(data), bytes(writers))
                        pages[pno] = new
                        h ^= hash((pno, new))
                    else:
                        del pages[pno]
            a += PAGE
        objs = dict(self._objs)
        for base, old_obj in list(objs.items()):
            if base < end and addr < base + old_obj.size:
                h ^= hash((base, old_obj))
                del objs[base]
        objs[addr] = obj
        h ^= hash((addr, obj))
        return Memory(pages, objs, h)

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
            if old.kind == "code" and not (addr <= base and base + old.size <= end):
                # Someone's bytes inside a program: it is now that writer's code.
                new = old._replace(writer=writer)
                objs[base] = new
                h ^= hash((base, new))
            # Overwritten whole (or a symbolic register image): what is left is plain bytes.
        return objs, h
