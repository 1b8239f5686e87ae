"""Find the line of a key in TOML source, so config errors can say `file:line: message`.

tomllib keeps no positions, so we scan the text once and remember where each table header,
array-of-tables entry and key starts. Good enough for hand-written config files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.\s]+?)\s*=")

Path = tuple[str | int, ...]


def _split_key(raw: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_\-]+)', raw)
    return [next(p for p in groups if p) for groups in parts]


def index_key_lines(source: str) -> dict[Path, int]:
    """Map every key path (array-of-tables entries indexed) to its 1-based line."""
    lines: dict[Path, int] = {}
    table: Path = ()
    array_counts: dict[Path, int] = {}
    in_multiline: str | None = None
    depth = 0  # open brackets of a multi-line array value
    for number, text in enumerate(source.splitlines(), start=1):
        if in_multiline:
            if in_multiline in text:
                in_multiline = None
            continue
        if depth > 0:
            depth += text.count("[") - text.count("]")
            continue
        header = _HEADER.match(text)
        if header:
            path = tuple(_split_key(header.group(2)))
            if header.group(1) == "[[":
                index = array_counts.get(path, -1) + 1
                array_counts[path] = index
                table = (*path, index)
                lines.setdefault(path, number)
            else:
                table = path
            lines[table] = number
            continue
        key = _KEY.match(text)
        if not key:
            continue
        key_path: Path = (*table, *_split_key(key.group(1)))
        lines.setdefault(key_path, number)
        value = text[key.end():]
        for quote in ('"""', "'''"):
            if value.count(quote) == 1:
                in_multiline = quote
        depth = max(0, value.count("[") - value.count("]"))
    return lines


def line_of(lines: dict[Path, int], loc: Sequence[str | int]) -> int | None:
    """The line of `loc` or, when it is absent (a missing key), of its closest parent."""
    path: Path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None
