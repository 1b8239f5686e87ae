"""The one way customer text is folded before it is compared: width, case, script, decoration."""

from __future__ import annotations

import functools
import re
import unicodedata
from enum import StrEnum

import opencc

_SPACES = re.compile(r"\s+")
# Hyphens and underscores join parts of one code ("TEE-01", "a_1"): where decoration becomes a
# space they vanish instead, so a SKU written with or without them folds alike.
_JOIN_CATEGORIES = frozenset({"Pc", "Pd"})


class Decoration(StrEnum):
    """What happens to punctuation, symbols, emoji, marks, control characters and spaces."""

    KEEP = "keep"  # kept as typed (only the ends trimmed): exact phrases, stars, a leading minus
    SPACE = "space"  # each run becomes one space, so the words it separated stay apart
    DROP = "drop"  # removed, spaces too: "转 人工！" reads as "转人工"


def fold(text: str, *, decoration: Decoration = Decoration.KEEP, simplified: bool = False) -> str:
    """Full-width → half-width (NFKC) and case-folded, so ＶＩＰ, vip and VIP compare alike;
    `simplified` also turns Traditional into Simplified (會員 → 会员)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if simplified:
        text = traditional_to_simplified(text)
    if decoration is Decoration.SPACE:
        text = _SPACES.sub(" ", "".join(_spaced(ch) for ch in text))
    elif decoration is Decoration.DROP:
        text = "".join(ch for ch in text if not _is_decoration(unicodedata.category(ch)))
    return text.strip()


def traditional_to_simplified(text: str) -> str:
    return _t2s().convert(text)


@functools.cache
def _t2s() -> opencc.OpenCC:
    # OpenCC reads its conversion tables on first use, never at import.
    return opencc.OpenCC("t2s")


def load_tables() -> None:
    """Read the conversion tables now (at start-up), not during the first customer's message."""
    _t2s()


def _is_decoration(category: str) -> bool:
    # Letters, numbers and spacing marks carry words; everything else is decoration.
    return category[0] in "PSZC" or category in ("Mn", "Me")


def _spaced(ch: str) -> str:
    category = unicodedata.category(ch)
    if not _is_decoration(category):
        return ch
    return "" if category in _JOIN_CATEGORIES else " "
