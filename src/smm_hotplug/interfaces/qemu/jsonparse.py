"""QMP input read the way QEMU reads it: lexer, streamer and parser on bytes.

qobject/json-lexer.c's states (strings in double or single quotes, numbers, lower-case keywords,
error recovery that skips to the next structural or control character), json-streamer.c's
collection of tokens until braces and brackets balance, with its limits (64 MiB of tokens, 2 Mi
tokens, nesting 1024), and json-parser.c's recursive descent with its error wording.  Runs inside
a token are consumed with one regular-expression match and a token's pieces are joined only when
it is complete, so input is processed in time linear in its size whatever the chunking.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from typing import Any

# Limits of qobject/json-streamer.c (and MAX_TOKEN_SIZE of json-lexer.c).
MAX_TOKEN_SIZE = 64 << 20
MAX_TOKEN_COUNT = 2 << 20
MAX_NESTING = 1 << 10


@contextlib.contextmanager
def deep_enough() -> Iterator[None]:
    """Room for recursion over MAX_NESTING levels (the streamer's limit), a few frames each."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 3 * MAX_NESTING + 500))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


class JsonError(Exception):
    pass


# Token types.
PUNCT, STRING, INTEGER, FLOAT, KEYWORD = "punct", "string", "integer", "float", "keyword"

# Lexer states (json-lexer.c).  Terminal states end their token at the first byte they do not take.
START, RECOVERY, DQ, DQ_ESC, SQ, SQ_ESC, ZERO, SIGN, DIGITS, MANTISSA, MANTISSA_DIGITS = range(11)
EXP_E, EXP_SIGN, EXP_DIGITS, KEYWORD_STATE = range(11, 15)

# Runs of bytes a state keeps consuming.
_RUNS = {
    START: re.compile(rb"[ \t\r\n]+"),
    RECOVERY: re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{}:,]+"),
    DQ: re.compile(rb"[\x20\x21\x23-\x5b\x5d-\xfd]+"),
    SQ: re.compile(rb"[\x20-\x26\x28-\x5b\x5d-\xfd]+"),
    DIGITS: re.compile(rb"[0-9]+"),
    MANTISSA_DIGITS: re.compile(rb"[0-9]+"),
    EXP_DIGITS: re.compile(rb"[0-9]+"),
    KEYWORD_STATE: re.compile(rb"[a-z]+"),
}
_DIGIT = frozenset(b"0123456789")
_LOWER = frozenset(b"abcdefghijklmnopqrstuvwxyz")
_STRUCT = {ord(c): c for c in "{}[],:"}
_TERMINAL = {
    ZERO: INTEGER,
    DIGITS: INTEGER,
    MANTISSA_DIGITS: FLOAT,
    EXP_DIGITS: FLOAT,
    KEYWORD_STATE: KEYWORD,
}


def _step(state: int, byte: int) -> int | str | None:
    """One transition of json-lexer.c's table for a byte no run took: the next state, a token type
    (the byte ends a string token), or None (an error: the byte joins the token and is reported)."""
    if state == START:
        if byte == 0x22:
            return DQ
        if byte == 0x27:
            return SQ
        if byte == 0x30:
            return ZERO
        if byte in _DIGIT:
            return DIGITS
        if byte == 0x2D:
            return SIGN
        if byte in _LOWER:
            return KEYWORD_STATE
        return None
    if state in (DQ, SQ):
        if byte == 0x5C:
            return DQ_ESC if state == DQ else SQ_ESC
        if byte == (0x22 if state == DQ else 0x27):
            return STRING
        return None
    if state in (DQ_ESC, SQ_ESC):
        return (DQ if state == DQ_ESC else SQ) if 0x20 <= byte <= 0xFD else None
    if state == SIGN:
        return ZERO if byte == 0x30 else DIGITS if byte in _DIGIT else None
    if state in (ZERO, DIGITS, MANTISSA_DIGITS) and byte == 0x2E and state != MANTISSA_DIGITS:
        return MANTISSA
    if state in (DIGITS, MANTISSA_DIGITS) and byte in b"eE":
        return EXP_E
    if state == MANTISSA:
        return MANTISSA_DIGITS if byte in _DIGIT else None
    if state == EXP_E:
        return EXP_SIGN if byte in b"+-" else EXP_DIGITS if byte in _DIGIT else None
    if state == EXP_SIGN:
        return EXP_DIGITS if byte in _DIGIT else None
    return None  # ZERO followed by a digit


class Streamer:
    """Feed bytes; collect complete top-level values (or JsonErrors) in order."""

    def __init__(self) -> None:
        self.state = START
        self.piece: list[bytes] = []  # the token being lexed, in pieces
        self.piece_len = 0
        self.tokens: list[tuple[str, bytes]] = []
        self.token_size = 0
        self.braces = 0
        self.brackets = 0
        self.out: list[Any | JsonError] = []

    def feed(self, data: bytes | str) -> list[Any | JsonError]:
        if isinstance(data, str):
            data = data.encode("utf-8", errors="surrogateescape")
        self.out = []
        pos, n = 0, len(data)
        while pos < n:
            state = self.state
            run = _RUNS.get(state)
            if run is not None:
                m = run.match(data, pos)
                if m is not None:
                    end = m.end()
                    if state == START:
                        pos = end
                        continue
                    if state == RECOVERY:
                        pos = end
                        continue
                    room = MAX_TOKEN_SIZE + 1 - self.piece_len
                    if end - pos >= room:
                        self._add(data[pos : pos + room])
                        pos += room
                        self._oversized()
                        continue
                    self._add(data[pos:end])
                    pos = end
                    continue
            byte = data[pos]
            if state == RECOVERY:
                self.state = START  # a structural or control byte: look at it again from START
                continue
            if state == START and byte in _STRUCT:
                self._token(PUNCT, bytes((byte,)))
                pos += 1
                continue
            if state in _TERMINAL:
                nxt = _step(state, byte) if state != KEYWORD_STATE else None
                if nxt is None and not (state == ZERO and byte in _DIGIT):
                    self._token(_TERMINAL[state], self._take())
                    self.state = START
                    continue  # the byte is looked at again from START
            nxt = _step(state, byte)
            pos += 1
            self._add(bytes((byte,)))
            if nxt is None:
                self._error(self._take())
                self.state = RECOVERY
            elif isinstance(nxt, str):
                self._token(nxt, self._take())
                self.state = START
            else:
                self.state = nxt
            if self.piece_len > MAX_TOKEN_SIZE:
                self._oversized()
        return self.out

    # -- lexer helpers ---------------------------------------------------------------------------
    def _add(self, part: bytes) -> None:
        self.piece.append(part)
        self.piece_len += len(part)

    def _take(self) -> bytes:
        text = b"".join(self.piece)
        self.piece, self.piece_len = [], 0
        return text

    def _oversized(self) -> None:
        """json_lexer_feed_char: a token longer than MAX_TOKEN_SIZE is handed on unfinished, which
        the streamer's size check refuses; lexing goes on from START."""
        text = self._take()
        self.state = START
        self._emit(JsonError("JSON token size limit exceeded"))
        del text

    # -- streamer (json_message_process_token) ----------------------------------------------------
    def _error(self, text: bytes) -> None:
        shown = text.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        self._emit(JsonError(f"JSON parse error, stray '{shown}'"))

    def _token(self, kind: str, text: bytes) -> None:
        if kind == PUNCT:
            if text == b"{":
                self.braces += 1
            elif text == b"}":
                self.braces -= 1
            elif text == b"[":
                self.brackets += 1
            elif text == b"]":
                self.brackets -= 1
        if self.token_size + len(text) + 1 > MAX_TOKEN_SIZE:
            self._emit(JsonError("JSON token size limit exceeded"))
            return
        if len(self.tokens) + 1 > MAX_TOKEN_COUNT:
            self._emit(JsonError("JSON token count limit exceeded"))
            return
        if self.braces + self.brackets > MAX_NESTING:
            self._emit(JsonError("JSON nesting depth limit exceeded"))
            return
        self.tokens.append((kind, text))
        self.token_size += len(text)
        if (self.braces > 0 or self.brackets > 0) and self.braces >= 0 and self.brackets >= 0:
            return
        self._emit(_parse(self.tokens))

    def _emit(self, item: Any | JsonError) -> None:
        self.braces = self.brackets = 0
        self.tokens = []
        self.token_size = 0
        self.out.append(item)


def _parse(tokens: list[tuple[str, bytes]]) -> Any | JsonError:
    parser = _Parser(tokens)
    try:
        with deep_enough():
            return parser.value()
    except JsonError as err:
        return err


class _Parser:
    """json-parser.c: recursive descent; the first error found is the one reported."""

    def __init__(self, tokens: list[tuple[str, bytes]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, bytes] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def pop(self) -> tuple[str, bytes]:
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
        if kind == PUNCT and text == b"{":
            return self.obj()
        if kind == PUNCT and text == b"[":
            return self.array()
        if kind == STRING:
            self.pop()
            return _unquote(text)
        if kind in (INTEGER, FLOAT):
            self.pop()
            return _number(kind, text)
        if kind == KEYWORD:
            self.pop()
            if text in (b"true", b"false", b"null"):
                return {b"true": True, b"false": False, b"null": None}[text]
            raise JsonError(f"JSON parse error, invalid keyword '{text.decode()}'")
        raise JsonError("JSON parse error, expecting value")

    def obj(self) -> dict:
        self.pop()
        out: dict = {}
        if self.peek() == (PUNCT, b"}"):
            self.pop()
            return out
        while True:
            if self.peek() is None:
                raise JsonError("JSON parse error, premature EOI")
            key = self.value()
            if not isinstance(key, str):
                raise JsonError("JSON parse error, key is not a string in object")
            if self.pop() != (PUNCT, b":"):
                raise JsonError("JSON parse error, missing : in object pair")
            val = self.value()
            if key in out:
                raise JsonError("JSON parse error, duplicate key")
            out[key] = val
            tok = self.pop()
            if tok == (PUNCT, b"}"):
                return out
            if tok != (PUNCT, b","):
                raise JsonError("JSON parse error, expected separator in dict")

    def array(self) -> list:
        self.pop()
        out: list = []
        if self.peek() == (PUNCT, b"]"):
            self.pop()
            return out
        while True:
            out.append(self.value())
            tok = self.pop()
            if tok == (PUNCT, b"]"):
                return out
            if tok != (PUNCT, b","):
                raise JsonError("JSON parse error, expected separator in list")


INT64_MIN, UINT64_MAX = -(1 << 63), (1 << 64) - 1


def _number(kind: str, text: bytes) -> int | float:
    """parse_literal: an integer is an int64 if it fits, else a uint64, else a double (strtod)."""
    if kind == INTEGER and len(text) <= 21:  # longer digit strings cannot fit in 64 bits
        value = int(text)
        if INT64_MIN <= value <= UINT64_MAX:
            return value
    return float(text)


_ESCAPES = {
    ord('"'): '"',
    ord("'"): "'",
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
# is_valid_codepoint (util/unicode.c): noncharacters are refused as well as surrogates.
_NONCHAR = re.compile(
    "[\ufdd0-\ufdef" + "".join(chr(p << 16 | 0xFFFE) + chr(p << 16 | 0xFFFF) for p in range(17)) + "]"
)


def _literal(raw: bytes) -> str:
    """mod_utf8_codepoint over a run without escapes: UTF-8 with \\xC0\\x80 for NUL, no
    surrogates, no noncharacters."""
    try:
        text = raw.replace(b"\xc0\x80", b"\0").decode("utf-8")
    except UnicodeDecodeError:
        raise JsonError("JSON parse error, invalid UTF-8 sequence in string") from None
    if _NONCHAR.search(text):
        raise JsonError("JSON parse error, invalid UTF-8 sequence in string")
    return text


def _valid(cp: int) -> bool:
    return 0 <= cp <= 0x10FFFF and not (
        0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE or 0xD800 <= cp <= 0xDFFF
    )


def _unquote(token: bytes) -> str:
    """parse_string: escapes as QEMU decodes them, in one pass over the token."""
    body = token[1:-1]
    out: list[str] = []
    pos = 0
    while True:
        nxt = body.find(b"\\", pos)
        if nxt < 0:
            out.append(_literal(body[pos:]))
            return "".join(out)
        out.append(_literal(body[pos:nxt]))
        code = body[nxt + 1]  # the lexer never lets a string end in a lone backslash
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            pos = nxt + 2
            continue
        if code != ord("u"):
            raise JsonError("JSON parse error, invalid escape sequence in string")
        cp = int(body[nxt + 2 : nxt + 6], 16) if _HEX4.fullmatch(body[nxt + 2 : nxt + 6]) else -1
        end = nxt + 6
        if 0xD800 <= cp <= 0xDBFF and body[end : end + 2] == b"\\u":
            low = body[end + 2 : end + 6]
            trailing = int(low, 16) if _HEX4.fullmatch(low) else -1
            if 0xDC00 <= trailing <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) + (trailing & 0x3FF)
                end += 6
            else:
                cp = -1
        if not _valid(cp):
            shown = token[nxt + 1 : end + 1].split(b"\0", 1)[0].decode("utf-8", errors="replace")
            raise JsonError(f"JSON parse error, {shown} is not a valid Unicode character")
        out.append(chr(cp))
        pos = end
