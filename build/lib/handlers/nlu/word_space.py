"""What the dense word spaces (topics.py, word_vectors.py) share.

Both read a data file that an installed package ships, without importing the package (its import
loads far more than we need), and both read a message's words the same way: a word the space
never saw (a dish, a title) is read from its characters, together worth one word.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


def package_file(package: str, relative: Path) -> Path | None:
    """The file at `relative` inside the installed `package`; None if either is missing."""
    spec = importlib.util.find_spec(package)  # locates the package without running it
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / relative
        if path.is_file():
            return path
    return None


def known_parts(words: Iterable[str], known: Callable[[str], bool]) -> Iterator[tuple[str, float]]:
    """The message's words the space knows, each with its share of one word: a known word counts
    1; an unknown one is read from its known characters at 1/len each (排骨 is unknown, 排 and 骨
    are not)."""
    for word in words:
        if known(word):
            yield word, 1.0
        elif len(word) > 1:
            share = 1.0 / len(word)
            for char in word:
                if known(char):
                    yield char, share
