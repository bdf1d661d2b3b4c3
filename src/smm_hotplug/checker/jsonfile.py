"""Reading the JSON files a user hands the tool (trace files, matrix expectations) against a
declared schema: whatever is wrong is one line that names the field, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from smm_hotplug.errors import UsageError

T = TypeVar("T")

# The schemas' deepest values are a few containers down; anything far deeper is refused before
# Python's recursive JSON parser could run out of stack on it.
MAX_NESTING = 16
# No number in these files has more digits than this; longer ones are refused by the schema
# instead of being converted (Python refuses to convert more than 4,300 digits, with a traceback).
MAX_DIGITS = 20


def field_name(loc: tuple[str | int, ...]) -> str:
    """``('trace', 3, 'actor')`` -> ``trace[3].actor``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the document"


class _Huge(str):
    """An integer literal too long to be any field's value (kept as its digits)."""


def _parse_int(digits: str) -> int | _Huge:
    return _Huge(digits) if len(digits.lstrip("-")) > MAX_DIGITS else int(digits)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def too_deep(text: str, limit: int = MAX_NESTING) -> str | None:
    """The field under which ``text`` nests more than ``limit`` arrays/objects deep, else None
    (a scan of the text that keeps only the path, so that it cannot run out of stack)."""
    stack: list[list[Any]] = []  # [kind, key or index, expecting a key]
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            top = stack[-1] if stack else None
            if top is not None and top[0] == "{" and top[2]:
                try:
                    top[1] = json.loads(text[i : j + 1])
                except ValueError:
                    top[1] = text[i + 1 : j]
                top[2] = False
            i = j + 1
            continue
        if ch in "[{":
            if len(stack) >= limit:
                return field_name(tuple(entry[1] for entry in stack if entry[1] is not None))
            stack.append([ch, 0 if ch == "[" else None, ch == "{"])
        elif ch in "]}" and stack:
            stack.pop()
        elif ch == "," and stack:
            if stack[-1][0] == "[":
                stack[-1][1] += 1
            else:
                stack[-1][2] = True
        i += 1
    return None


def loads(text: str, what: str) -> Any:
    """Parse JSON text; ``what`` names the file in the error ("trace file t.json")."""
    deep = too_deep(text)
    if deep is not None:
        raise UsageError(f"{what}: {deep}: nested more than {MAX_NESTING} levels deep")
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise UsageError(f"{what} is not JSON ({err.msg} at line {err.lineno})") from None
    except (ValueError, RecursionError) as err:
        raise UsageError(f"{what} is not JSON ({err})") from None


# pydantic's wording names Python types ("a valid dictionary or instance of OptionsModel"); a
# user sees JSON's.
_MESSAGES = {
    "model_type": "should be a JSON object",
    "model_attributes_type": "should be a JSON object",
    "dict_type": "should be a JSON object",
    "list_type": "should be a JSON array",
    "tuple_type": "should be a JSON array",
    "int_type": "should be an integer",
    "bool_type": "should be true or false",
    "string_type": "should be a string",
    "missing": "is missing",
    "extra_forbidden": "is not a field of this file",
}


def message(error: Any) -> str:
    if isinstance(error.get("input"), _Huge):
        return f"an integer of {len(error['input']):,} digits is out of range"
    text = _MESSAGES.get(error["type"])
    if text is not None:
        return text
    ctx = error.get("ctx") or {}
    if error["type"] == "too_long" and "max_length" in ctx:
        return f"should have at most {ctx['max_length']} items, not {ctx.get('actual_length', 'more')}"
    if error["type"] == "too_short" and "min_length" in ctx:
        return f"should have at least {ctx['min_length']} items, not {ctx.get('actual_length', 'fewer')}"
    msg = str(error["msg"])
    return "should" + msg[len("Input should") :] if msg.startswith("Input should") else msg


def validate(doc: Any, schema: TypeAdapter[T], what: str) -> T:
    """``doc`` checked against ``schema``; the first problem, with its field, as one line."""
    try:
        return schema.validate_python(doc)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        first = errors[0]
        msg = message(first)
        more = ""
        if len(errors) > 1:
            more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise UsageError(f"{what}: {field_name(first['loc'])}: {msg}{more}") from None


def read_text(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise UsageError(f"cannot read {what}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"cannot read {what}: it is a directory") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {what}: {err}") from None
