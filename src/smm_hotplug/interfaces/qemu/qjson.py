"""JSON the way QEMU's QMP reads and writes it.

Writing: QEMU's dictionaries are hash tables (QDict: 512 buckets keyed by tdb_hash, each bucket
a list with the newest entry first), so keys come out in that order — e.g. query-status gives
"status", "singlestep", "running".  Strings escape every byte outside 0x20..0x7e as \\uXXXX
(upper-case hex); floats print as %.17g.

Reading: a streaming lexer that collects tokens until braces and brackets balance (objects may
span lines; several may share a line), then a parser that reports errors with QEMU's wording
("JSON parse error, expecting value", "… invalid keyword 'junk'", "… stray '@'").  Single-quoted
strings are accepted, as QEMU accepts them.
"""

from __future__ import annotations

import math
import re
from typing import Any

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


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        cp = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif cp < 0x20 or cp >= 0x7F:
            if cp > 0xFFFF:
                cp -= 0x10000
                out.append(f"\\u{0xD800 + (cp >> 10):04X}\\u{0xDC00 + (cp & 0x3FF):04X}")
            else:
                out.append(f"\\u{cp:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _float(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return "null"
    text = f"{value:.17g}"
    return text


def dumps(obj: Any) -> str:
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
        return "[" + ", ".join(dumps(v) for v in obj) + "]"
    if isinstance(obj, dict):
        keys = qdict_order(list(obj))
        return "{" + ", ".join(f"{_string(k)}: {dumps(obj[k])}" for k in keys) + "}"
    raise TypeError(f"cannot encode {type(obj).__name__}")


# -- reading ------------------------------------------------------------------------------------
class JsonError(Exception):
    pass


_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<punct>[{}\[\]:,])
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<keyword>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_OPEN_STRING = re.compile(r"""("|')""")


class Streamer:
    """Feed bytes; collect complete top-level values (or errors) in order."""

    def __init__(self) -> None:
        self.buf = ""
        self.tokens: list[tuple[str, str]] = []
        self.depth = 0

    def feed(self, text: str) -> list[Any | JsonError]:
        self.buf += text
        out: list[Any | JsonError] = []
        pos = 0
        while pos < len(self.buf):
            m = _TOKEN.match(self.buf, pos)
            if m is None:
                ch = self.buf[pos]
                if ch in "\"'":
                    break  # an unfinished string: wait for more input
                if ch == "-" and pos + 1 == len(self.buf):
                    break  # a number may follow
                out.append(JsonError(f"JSON parse error, stray '{ch if ch != chr(0) else ''}'"))
                self.tokens, self.depth = [], 0
                pos += 1
                continue
            kind = m.lastgroup or ""
            text_tok = m.group()
            end = m.end()
            if kind in ("number", "keyword") and end == len(self.buf):
                break  # the token may continue in the next chunk
            pos = end
            if kind == "ws":
                continue
            self.tokens.append((kind, text_tok))
            if kind == "punct" and text_tok in "{[":
                self.depth += 1
            elif kind == "punct" and text_tok in "}]":
                self.depth -= 1
            if self.depth <= 0:
                out.append(_parse(self.tokens))
                self.tokens, self.depth = [], 0
        self.buf = self.buf[pos:]
        return out


def _parse(tokens: list[tuple[str, str]]) -> Any | JsonError:
    parser = _Parser(tokens)
    try:
        return parser.value()
    except JsonError as err:
        return err


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def pop(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise JsonError("JSON parse error, premature EOI")
        self.i += 1
        return tok

    def value(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise JsonError("JSON parse error, premature EOI")
        kind, text = tok
        if kind == "punct" and text == "{":
            return self.obj()
        if kind == "punct" and text == "[":
            return self.array()
        if kind == "string":
            self.pop()
            return _unquote(text)
        if kind == "number":
            self.pop()
            if re.fullmatch(r"-?\d+", text):
                return int(text)
            return float(text)
        if kind == "keyword":
            self.pop()
            if text in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[text]
            raise JsonError(f"JSON parse error, invalid keyword '{text}'")
        raise JsonError("JSON parse error, expecting value")

    def obj(self) -> dict:
        self.pop()
        out: dict = {}
        if self.peek() == ("punct", "}"):
            self.pop()
            return out
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise JsonError("JSON parse error, key is not a string in object")
            if self.pop() != ("punct", ":"):
                raise JsonError("JSON parse error, missing : in object pair")
            out[key] = self.value()
            tok = self.pop()
            if tok == ("punct", "}"):
                return out
            if tok != ("punct", ","):
                raise JsonError("JSON parse error, expected separator in dict")

    def array(self) -> list:
        self.pop()
        out: list = []
        if self.peek() == ("punct", "]"):
            self.pop()
            return out
        while True:
            out.append(self.value())
            tok = self.pop()
            if tok == ("punct", "]"):
                return out
            if tok != ("punct", ","):
                raise JsonError("JSON parse error, expected separator in list")


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unquote(token: str) -> str:
    body = token[1:-1]
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6]):
            cp = int(body[i + 2 : i + 6], 16)
            i += 6
            if (
                0xD800 <= cp < 0xDC00
                and body[i : i + 2] == "\\u"
                and re.fullmatch(r"[dD][c-fC-F][0-9a-fA-F]{2}", body[i + 2 : i + 6])
            ):
                cp = 0x10000 + ((cp - 0xD800) << 10) + (int(body[i + 2 : i + 6], 16) - 0xDC00)
                i += 6
            elif 0xD800 <= cp < 0xE000:
                raise JsonError("JSON parse error, invalid \\u escape (unpaired surrogate)")
            out.append(chr(cp))
        elif nxt == "u":
            raise JsonError("JSON parse error, invalid hex escape sequence in string")
        else:
            raise JsonError("JSON parse error, invalid escape sequence in string")
    return "".join(out)
