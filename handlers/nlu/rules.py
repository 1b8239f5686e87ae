"""Intent rules written by operators: exact phrases, keywords and regexes, highest priority first."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from handlers.nlu.settings import IntentSpec


class RuleKind(IntEnum):
    # On equal priority a more specific kind wins: a whole-message phrase says more than a
    # regex, and a regex more than a bare keyword.
    EXACT = 3
    REGEX = 2
    KEYWORD = 1


@dataclass(frozen=True, slots=True)
class RuleHit:
    intent: str
    kind: RuleKind
    priority: int
    pattern: str


@dataclass(frozen=True, slots=True)
class _Rule:
    intent: str
    kind: RuleKind
    priority: int
    pattern: str
    order: int  # position in the config, the last tie-breaker


class IntentRules:
    """Every rule of every intent, checked against the normalised message."""

    def __init__(self, intents: Sequence[IntentSpec], normalize: Callable[[str], str]) -> None:
        self._exact: dict[str, _Rule] = {}
        self._keywords: list[_Rule] = []
        self._regexes: list[tuple[_Rule, re.Pattern[str]]] = []
        order = 0
        for intent in intents:
            for phrase in intent.exact:
                order += 1
                rule = _Rule(intent.name, RuleKind.EXACT, intent.priority, normalize(phrase), order)
                current = self._exact.get(rule.pattern)
                # The same phrase under two intents: the higher priority (then earlier) keeps it.
                if current is None or rule.priority > current.priority:
                    self._exact[rule.pattern] = rule
            for keyword in intent.keywords:
                order += 1
                normalized = normalize(keyword)
                if normalized:
                    self._keywords.append(
                        _Rule(intent.name, RuleKind.KEYWORD, intent.priority, normalized, order))
            for pattern in intent.regex:
                order += 1
                rule = _Rule(intent.name, RuleKind.REGEX, intent.priority, pattern, order)
                self._regexes.append((rule, re.compile(pattern, re.IGNORECASE)))

    def __bool__(self) -> bool:
        return bool(self._exact or self._keywords or self._regexes)

    def match(self, normalized: str) -> RuleHit | None:
        """The winning rule: highest priority, then most specific kind, then longest keyword."""
        best: _Rule | None = self._exact.get(normalized)
        best_key = _rank(best) if best else None
        for rule, compiled in self._regexes:
            if compiled.search(normalized):
                key = _rank(rule)
                if best_key is None or key > best_key:
                    best, best_key = rule, key
        for rule in self._keywords:
            if rule.pattern in normalized:
                key = _rank(rule)
                if best_key is None or key > best_key:
                    best, best_key = rule, key
        if best is None:
            return None
        return RuleHit(best.intent, best.kind, best.priority, best.pattern)


def _rank(rule: _Rule) -> tuple[int, int, int, int]:
    return (rule.priority, int(rule.kind), len(rule.pattern), -rule.order)
