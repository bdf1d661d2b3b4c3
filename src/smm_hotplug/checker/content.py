"""Content addresses of state parts: the same 64-bit name for equal values in every process.

Worker processes (``checker.parallel``, ``checker.cluster``) send each other states as the
content addresses of their parts and ship a part's value only the first time a receiver needs
it.  Python's ``hash`` cannot serve (it is salted per process), nor can pickle's bytes (they
depend on which equal objects happen to be shared); ``digest`` hashes a canonical encoding
instead: plain values by type and content, tuples and named tuples element by element, sets and
dicts in sorted order, and any other object through the copy it gives of itself for another
process (``__reduce__``: RAM lists its pages in address order with its writers by name).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any


def digest(value: Any) -> int:
    """64-bit content address of ``value`` (never 0)."""
    out: list[bytes] = []
    _encode(value, out)
    d = int.from_bytes(hashlib.blake2b(b"".join(out), digest_size=8).digest(), "little")
    return d or 1


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
