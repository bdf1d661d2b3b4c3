"""Content addresses of state parts: the same 64-bit name for equal values in every process.

Worker processes (``checker.parallel``, ``checker.cluster``) send each other states as the
content addresses of their parts and ship a part's value only the first time a receiver needs
it.  Python's ``hash`` cannot serve (it is salted per process), nor can pickle's bytes (they
depend on which equal objects happen to be shared); a canonical encoding is hashed instead:
plain values by type and content, tuples and named tuples element by element, sets and dicts in
sorted order, and any other object through the copy it gives of itself for another process
(``__reduce__``: RAM lists its pages in address order with its writers by name).

A state belongs to the worker of a search on several processes that ``owners`` names from its
parts' content addresses, so every process agrees on it.

A state's parts are large and share most of their pieces with other parts (a RAM image its
pages, a tuple of CPUs its CPUs), so ``Addresses`` names a part from the names of its pieces,
each computed once: a RAM image from its pages' and objects', a tuple from its elements'
(each encoded as above).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np

from smm_hotplug.hw.memory import Memory, Page, canonical_page


def _encode(x: Any, out: list[bytes]) -> None:
    t = type(x)
    if x is None:
        out.append(b"N")
    elif t is bool:
        out.append(b"T" if x else b"F")
    elif t is int:
        raw = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
        out.append(b"I" + struct.pack("<H", len(raw)) + raw)
    elif t is str:
        raw = x.encode()
        out.append(b"S" + struct.pack("<I", len(raw)) + raw)
    elif t is bytes:
        out.append(b"B" + struct.pack("<I", len(x)) + x)
    elif t is float:
        out.append(b"D" + struct.pack("<d", x))
    elif isinstance(x, tuple | list):
        name = b"" if t in (tuple, list) else f"{t.__module__}.{t.__qualname__}".encode()
        out.append(b"(" + struct.pack("<HI", len(name), len(x)) + name)
        for item in x:
            _encode(item, out)
    elif isinstance(x, frozenset | set):
        out.append(b"{" + struct.pack("<I", len(x)))
        out.extend(sorted(_encoded(item) for item in x))
    elif isinstance(x, dict):
        out.append(b"<" + struct.pack("<I", len(x)))
        out.extend(sorted(_encoded(k) + _encoded(v) for k, v in x.items()))
    else:
        fn, args, *_ = x.__reduce__()
        name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', fn)}".encode()
        out.append(b"R" + struct.pack("<H", len(name)) + name)
        _encode(args, out)


def _encoded(x: Any) -> bytes:
    out: list[bytes] = []
    _encode(x, out)
    return b"".join(out)


def _name(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1


class Addresses:
    """Content addresses of one process's parts, from cached addresses of their pieces."""

    def __init__(self) -> None:
        self._pieces: dict[int, tuple[Any, bytes]] = {}  # id(piece) -> (piece, its name)
        self._pages: dict[int, tuple[Page, int]] = {}  # id(page) -> (page, its address)
        # (place, id(page or object)) -> (page or object, the name of it at that place)
        self._placed: dict[tuple[int, int], tuple[Any, int]] = {}

    def _piece(self, x: Any) -> bytes:
        hit = self._pieces.get(id(x))
        if hit is not None and hit[0] is x:
            return hit[1]
        name = hashlib.blake2b(_encoded(x), digest_size=16).digest()
        self._pieces[id(x)] = (x, name)  # kept: the id stays this object's
        return name

    def page(self, page: Page) -> int:
        """A page's address: its bytes and writers as every process spells them."""
        hit = self._pages.get(id(page))
        if hit is not None and hit[0] is page:
            return hit[1]
        data, writers, names = canonical_page(page)
        a = _name(b"P" + data + writers + "\0".join(names).encode())
        self._pages[id(page)] = (page, a)
        return a

    def memory_form(self, mem: Memory) -> tuple[tuple[tuple[int, int], ...], tuple]:
        """A RAM image as (page number, page address) pairs and its objects, in address order."""
        pages = tuple(sorted((pno, self.page(page)) for pno, page in mem.pages()))
        return pages, tuple(sorted(mem.objects()))

    def memory(self, mem: Memory) -> int:
        """A RAM image's address: the XOR of its pages' and objects' names at their places (as
        Zobrist hashing does; each name is computed once), so no order is needed."""
        placed = self._placed
        acc = [0, 0]
        for kind, items in ((0, mem.pages()), (1, mem.objects())):
            x = 0
            for at, piece in items:
                hit = placed.get((at, id(piece)))
                if hit is None or hit[0] is not piece:
                    name = self.page(piece) if kind == 0 else int.from_bytes(self._piece(piece)[:8], "little")
                    raw = at.to_bytes(8, "little") + name.to_bytes(8, "little") + bytes([kind])
                    hit = placed[(at, id(piece))] = (piece, _name(raw))
                x ^= hit[1]
            acc[kind] = x
        size = len(mem.pages()).to_bytes(4, "little") + len(mem.objects()).to_bytes(4, "little")
        return _name(b"M" + acc[0].to_bytes(8, "little") + acc[1].to_bytes(8, "little") + size)

    def pieces(self, tag: bytes, pieces: tuple) -> int:
        """A tuple's address, from its elements' (each a value ``digest`` can name)."""
        return _name(tag + b"".join([self._piece(p) for p in pieces]))


_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], np.uint64)


def owners(parts: np.ndarray, workers: int) -> np.ndarray:
    """The worker owning each state, from its parts' content addresses ((n, KEY_WIDTH) uint64)."""
    with np.errstate(over="ignore"):
        h = (parts * _MIX[: parts.shape[1]]).sum(axis=1, dtype=np.uint64)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return (h % np.uint64(workers)).astype(np.int64)
