"""Checks on untrusted input, applied at each edge before anything reaches storage.

What passes can be stored by every supported database: text holds no NUL (PostgreSQL refuses
it) and no unpaired surrogate (no database can encode it), integers fit in 64 bits, numbers are
finite, and nesting is bounded (deep JSON exhausts parsers and serialisers). A problem is a
`BadInput` naming where it is, so the edge can answer a clean 4xx that says what to fix.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Deeper than any event or message needs; far below what exhausts a parser or serialiser.
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class BadInput(ValueError):
    """`where` names the offending value ("data.attributes.a", "user", "body")."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored, or None."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (not valid Unicode text)"
    return None


def check_text(where: str, text: str) -> str:
    problem = text_problem(text)
    if problem:
        raise BadInput(where, problem)
    return text


def id_in_range(text: str, minimum: int = 1, maximum: int = INT64_MAX) -> int | None:
    """A database id given as text ("123"), or None when it is not plain ASCII digits within
    minimum..maximum (a 64-bit column by default: a larger number fails in the database)."""
    if not text.isascii() or not text.isdigit() or len(text) > len(str(maximum)):
        return None
    value = int(text)
    return value if minimum <= value <= maximum else None


def _reject_constant(name: str) -> Any:
    raise BadInput("", f"{name} is not a JSON number")


def parse_json(raw: bytes | str, max_depth: int = MAX_DEPTH, *, check: bool = True) -> Any:
    """The JSON value of a request body; BadInput (its message for "body is not JSON: …") when
    it is not JSON (or not UTF-8, or holds NaN or Infinity) or nests too deeply to parse. With `check`, the value also passes
    `check_json` (a caller that checks parts of it separately, to refuse only those, passes False)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")  # strictly: json.loads would let encoded surrogates through
        except UnicodeDecodeError:
            raise BadInput("", "not UTF-8") from None
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise BadInput("", "nested too deeply") from None
    except BadInput:
        raise
    except ValueError as error:
        raise BadInput("", str(error)) from None
    if check:
        check_json(value, max_depth)
    return value


def check_json(value: Any, max_depth: int = MAX_DEPTH, where: str = "") -> None:
    """BadInput for the first string, number or nesting in `value` no database can store.

    Iterative, so a value nested however deep is refused without recursing into it.
    """
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            check_text(path or "value", item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise BadInput(path or "value", "number is out of range (more than 64 bits)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise BadInput(path or "value", "number is not finite")
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise BadInput(path or "value", f"nested deeper than {max_depth} levels")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):  # named by its parent: the key itself may be unprintable
                    check_text(f"{path} (a key)" if path else "a key", key)
                name = f"{path}.{key}" if path else str(key)
                stack.append((child, name, depth + 1))
