"""Message normalisation: one canonical form for full-width, Traditional, cased and decorated text."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

import opencc

# Symbols, emoji, punctuation, marks and control/format characters (ZWJ, variation selectors)
# carry no intent; they become a space so that the words they separated stay apart.
_DROP_CATEGORIES = frozenset({"Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So",
                              "Cc", "Cf", "Cs", "Co", "Cn", "Mn", "Me", "Zl", "Zp", "Zs"})
# Hyphens and underscores join parts of one code ("TEE-01", "a_1"): they vanish without a space,
# so a SKU written with or without them normalises alike.
_JOIN_CATEGORIES = frozenset({"Pc", "Pd"})
_SPACES = re.compile(r"\s+")


class Normalizer:
    """Turns a raw message into the form every matcher sees.

    Full-width → half-width (NFKC), case-folded, Traditional → Simplified, emoji and punctuation
    removed, whitespace collapsed, then operator synonyms rewritten to their canonical word.
    """

    def __init__(self, synonyms: Mapping[str, list[str]] | None = None) -> None:
        # OpenCC reads its conversion tables here, at build time, never at import.
        self._t2s = opencc.OpenCC("t2s")
        self._synonyms: dict[str, str] = {}
        self._synonym_re: re.Pattern[str] | None = None
        pairs = {
            self.clean(variant): self.clean(canonical)
            for canonical, variants in (synonyms or {}).items()
            for variant in variants
        }
        pairs = {v: c for v, c in pairs.items() if v and v != c}
        if pairs:
            self._synonyms = pairs
            # Longest variant first, so "会员卡" is rewritten before "会员".
            ordered = sorted(pairs, key=len, reverse=True)
            self._synonym_re = re.compile("|".join(re.escape(v) for v in ordered))

    def clean(self, text: str) -> str:
        """Width, case, script, decoration and spacing, without synonyms."""
        text = unicodedata.normalize("NFKC", text).casefold()
        text = self._t2s.convert(text)
        text = "".join(_replacement(ch) for ch in text)
        return _SPACES.sub(" ", text).strip()

    def __call__(self, text: str) -> str:
        text = self.clean(text)
        if self._synonym_re is not None:
            text = self._synonym_re.sub(lambda m: self._synonyms[m.group(0)], text)
        return text


def _replacement(ch: str) -> str:
    category = unicodedata.category(ch)
    if category in _DROP_CATEGORIES:
        return " "
    if category in _JOIN_CATEGORIES:
        return ""
    return ch
