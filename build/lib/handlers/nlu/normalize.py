"""Message normalisation for the intent engine: the folded text, then operator synonyms."""

from __future__ import annotations

import re
from collections.abc import Mapping

from handlers.text import Decoration, fold, load_tables


class Normalizer:
    """Turns a raw message into the form every matcher sees.

    Full-width → half-width (NFKC), case-folded, Traditional → Simplified, emoji and punctuation
    removed, whitespace collapsed, then operator synonyms rewritten to their canonical word.
    """

    def __init__(self, synonyms: Mapping[str, list[str]] | None = None) -> None:
        load_tables()  # at build time, not in the first message
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
        return fold(text, decoration=Decoration.SPACE, simplified=True)

    def __call__(self, text: str) -> str:
        text = self.clean(text)
        if self._synonym_re is not None:
            text = self._synonym_re.sub(lambda m: self._synonyms[m.group(0)], text)
        return text
