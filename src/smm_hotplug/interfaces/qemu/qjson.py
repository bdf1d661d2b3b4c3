"""JSON the way QEMU's QMP writes it (reading is jsonparse.py).

QEMU's dictionaries are hash tables (QDict: 512 buckets keyed by tdb_hash, each bucket a list
with the newest entry first), so keys come out in that order — e.g. query-status gives "status",
"singlestep", "running".  Strings escape every byte outside 0x20..0x7e as \\uXXXX (upper-case
hex); floats print as %.17g.
"""

from __future__ import annotations

import re
from typing import Any

from smm_hotplug.interfaces.qemu.jsonparse import deep_enough

QDICT_BUCKETS = 512


def tdb_hash(name: str) -> int:
    raw = name.encode("utf-8", errors="surrogatepass")
    value = (0x238F13AF * len(raw)) & 0xFFFFFFFF
    for i, c in enumerate(raw):
        value = (value + (c << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


def qdict_order(keys: list[str]) -> list[str]:
    """Iteration order of a QDict built by inserting ``keys`` in this order."""
    buckets: dict[int, list[str]] = {}
    for key in keys:
        buckets.setdefault(tdb_hash(key) % QDICT_BUCKETS, []).insert(0, key)
    return [k for b in sorted(buckets) for k in buckets[b]]


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    cp = ord(ch)
    if cp > 0xFFFF:
        cp -= 0x10000
        return f"\\u{0xD800 + (cp >> 10):04X}\\u{0xDC00 + (cp & 0x3FF):04X}"
    return f"\\u{cp:04X}"


def _string(text: str) -> str:
    """quoted_str (qobject/json-writer.c): every character outside 0x20..0x7e escaped."""
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


def _float(value: float) -> str:
    # json_writer_double: "%.17g", which prints inf and nan as such (QEMU's own FIXME).
    return f"{value:.17g}"


def dumps(obj: Any) -> str:
    """QEMU's JSON for ``obj`` (whose nesting, coming from QMP input, is at most MAX_NESTING)."""
    with deep_enough():
        return _dumps(obj)


def _dumps(obj: Any) -> str:
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        return _float(obj)
    if isinstance(obj, str):
        return _string(obj)
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(_dumps(v) for v in obj) + "]"
    if isinstance(obj, dict):
        keys = qdict_order(list(obj))
        return "{" + ", ".join(f"{_string(k)}: {_dumps(obj[k])}" for k in keys) + "}"
    raise TypeError(f"cannot encode {type(obj).__name__}")
