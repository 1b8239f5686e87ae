"""The one rule engine behind operator rules and intents: which rule answers when several match."""

from __future__ import annotations

import pytest

from handlers.nlu.engine import IntentEngine
from handlers.nlu.settings import IntentSpec, NluSettings
from handlers.rules import Rule, RuleKind, RuleMatcher


def operator_rules(*rules: tuple[str, RuleKind, str, int]) -> RuleMatcher:
    return RuleMatcher([Rule(name, kind, (pattern,), priority, reply=f"reply {name}")
                        for name, kind, pattern, priority in rules])


def intents(*rules: tuple[str, RuleKind, str, int]) -> IntentEngine:
    fields = {RuleKind.EXACT: "exact", RuleKind.KEYWORD: "keywords", RuleKind.REGEX: "regex"}
    return IntentEngine.build([IntentSpec(name=name, priority=priority, reply=f"reply {name}",
                                          **{fields[kind]: [pattern]})
                               for name, kind, pattern, priority in rules], [], NluSettings())


BOTH = pytest.mark.parametrize("build", [operator_rules, intents], ids=["operator_rules", "intents"])


@BOTH
def test_on_equal_priority_exact_beats_regex_beats_keyword(build) -> None:
    matcher = build(("by_keyword", RuleKind.KEYWORD, "退款", 0), ("by_regex", RuleKind.REGEX, "^退款$", 0),
                    ("by_exact", RuleKind.EXACT, "退款", 0))
    assert matcher.match("退款").intent == "by_exact"
    matcher = build(("by_keyword", RuleKind.KEYWORD, "退款", 0), ("by_regex", RuleKind.REGEX, "退款", 0))
    assert matcher.match("我要退款").intent == "by_regex"


@BOTH
def test_a_higher_priority_beats_a_more_specific_kind(build) -> None:
    matcher = build(("by_exact", RuleKind.EXACT, "退款", 0), ("by_keyword", RuleKind.KEYWORD, "退", 5))
    assert matcher.match("退款").intent == "by_keyword"


@BOTH
def test_on_a_full_tie_the_longer_pattern_then_the_first_written_wins(build) -> None:
    matcher = build(("short", RuleKind.KEYWORD, "退", 0), ("long", RuleKind.KEYWORD, "退款", 0),
                    ("same_length", RuleKind.KEYWORD, "要退", 0))
    assert matcher.match("我要退款").intent == "long"
    assert matcher.match("我要退货").intent == "same_length"
    assert matcher.match("退货").intent == "short"
    first = build(("first", RuleKind.KEYWORD, "退款", 0), ("second", RuleKind.KEYWORD, "退款", 0))
    assert first.match("退款").intent == "first"


@BOTH
def test_patterns_match_whatever_the_width_and_case(build) -> None:
    matcher = build(("vip", RuleKind.EXACT, "VIP", 0), ("order", RuleKind.REGEX, r"^[A-Z]\d{4,}$", 0))
    assert matcher.match("ｖｉｐ").intent == "vip"
    assert matcher.match("a1001").intent == "order"
    assert matcher.match("我是vip吗") is None


def test_operator_rules_keep_punctuation_and_their_regexes_see_the_message_as_typed() -> None:
    matcher = operator_rules(("site", RuleKind.EXACT, "官网", 0), ("question", RuleKind.REGEX, "？$", 0))
    assert matcher.match("官网").reply == "reply site"  # type: ignore[union-attr]
    assert matcher.match("官网？").intent == "question"  # type: ignore[union-attr]
    assert matcher.match("  ") is None
