"""The one rule engine: exact phrases, regexes and keywords, for operator rules and intents alike.

Of every rule that matches, the winner is the one with the highest priority; on equal priority
the more specific kind (exact, then regex, then keyword), then the longer pattern, then the rule
written first in the config.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from handlers.matching import Match
from handlers.text import fold


class RuleKind(StrEnum):
    EXACT = "exact"  # the whole (normalised) message
    REGEX = "regex"  # re.search, case-insensitive
    KEYWORD = "keyword"  # any pattern inside the message


# A whole-message phrase says more than a regex, and a regex more than a bare keyword.
_SPECIFICITY = {RuleKind.EXACT: 3, RuleKind.REGEX: 2, RuleKind.KEYWORD: 1}


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: RuleKind
    patterns: tuple[str, ...]
    priority: int = 0
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule: Rule
    pattern: str


@dataclass(frozen=True, slots=True)
class _Pattern:
    rule: Rule
    text: str  # normalised, or the regex source
    rank: tuple[int, int, int, int]


class RuleSet:
    """Every pattern of every rule; exact and keyword patterns go through `normalize` once here,
    and `match` takes text that went through the same function."""

    def __init__(self, rules: Sequence[Rule], normalize: Callable[[str], str]) -> None:
        self._exact: dict[str, _Pattern] = {}
        self._keywords: list[_Pattern] = []
        self._regexes: list[tuple[_Pattern, re.Pattern[str]]] = []
        for order, rule in enumerate(rules):
            for raw in rule.patterns:
                text = raw if rule.kind is RuleKind.REGEX else normalize(raw)
                if not text:
                    continue  # nothing left to compare (a pattern of punctuation only)
                found = _Pattern(rule, text, (rule.priority, _SPECIFICITY[rule.kind], len(text), -order))
                if rule.kind is RuleKind.EXACT:
                    current = self._exact.get(text)
                    # The same phrase in two rules: the higher priority (then earlier) keeps it.
                    if current is None or found.rank > current.rank:
                        self._exact[text] = found
                elif rule.kind is RuleKind.KEYWORD:
                    self._keywords.append(found)
                else:
                    self._regexes.append((found, re.compile(raw, re.IGNORECASE)))

    def __bool__(self) -> bool:
        return bool(self._exact or self._keywords or self._regexes)

    def match(self, normalized: str, raw: str | None = None) -> RuleHit | None:
        """The winning rule for a message; regexes also see the `raw` text when given, so a
        pattern may rely on characters normalisation changes."""
        if not normalized:
            return None
        best = self._exact.get(normalized)
        for found, compiled in self._regexes:
            if (best is None or found.rank > best.rank) and (
                    compiled.search(normalized) or (raw is not None and compiled.search(raw))):
                best = found
        for found in self._keywords:
            if (best is None or found.rank > best.rank) and found.text in normalized:
                best = found
        return None if best is None else RuleHit(best.rule, best.text)


class RuleMatcher:
    """The operator's `[[rules]]` as a matcher: width and case folded, punctuation kept."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = RuleSet(rules, fold)

    def match(self, text: str) -> Match | None:
        hit = self._rules.match(fold(text), text)
        if hit is None:
            return None
        return Match(intent=hit.rule.name, source="rule", confidence=1.0, reply=hit.rule.reply)
