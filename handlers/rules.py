"""Operator rules from TOML: exact, keyword and regex patterns, highest priority first."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from handlers.matching import Match


def fold(text: str) -> str:
    """Full-width to half-width and case-folded, so ＶＩＰ, vip and VIP match alike."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: str  # "exact" | "keyword" | "regex"
    patterns: tuple[str, ...]
    reply: str
    priority: int = 0


class RuleMatcher:
    """Tries every rule in priority order (exact before keyword before regex on a tie)."""

    _KIND_ORDER = {"exact": 0, "keyword": 1, "regex": 2}

    def __init__(self, rules: Sequence[Rule]):
        ordered = sorted(
            enumerate(rules), key=lambda item: (-item[1].priority, self._KIND_ORDER[item[1].match], item[0])
        )
        self._rules = [
            (rule, tuple(fold(p) for p in rule.patterns), tuple(re.compile(p, re.IGNORECASE) for p in rule.patterns)
             if rule.match == "regex" else ())
            for _, rule in ordered
        ]

    def match(self, text: str) -> Match | None:
        folded = fold(text)
        if not folded:
            return None
        for rule, patterns, regexes in self._rules:
            if rule.match == "exact":
                hit = folded in patterns
            elif rule.match == "keyword":
                hit = any(p in folded for p in patterns)
            else:
                hit = any(r.search(text) or r.search(folded) for r in regexes)
            if hit:
                return Match(intent=rule.name, source="rule", confidence=1.0, reply=rule.reply)
        return None
