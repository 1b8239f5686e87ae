"""Operator-written understanding settings: intents, FAQ entries, dictionary and matcher options."""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from handlers.matching import Action

# "none" is what evaluation files and the classifier use for "belongs to no intent".
RESERVED_INTENT_NAMES = frozenset({"none"})

Name = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
]
Phrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


def _check_regexes(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"invalid regular expression {pattern!r}: {error}") from None
    return patterns


class IntentSpec(BaseModel):
    """One thing a customer may want, how to recognise it and what the bot does about it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    description: str = ""
    # Example phrases train the classifier; 15–30 natural, varied phrasings work well.
    examples: list[Phrase] = []
    # Rules are checked before the classifier; among rules the highest priority wins.
    exact: list[Phrase] = []  # the whole (normalised) message equals one of these
    keywords: list[Phrase] = []  # the (normalised) message contains one of these
    regex: list[Phrase] = []  # re.search over the normalised message
    priority: int = 0
    action: Action = Action.REPLY
    reply: str | None = None  # template with variables such as {nickname}
    flow: str | None = None  # the flow to start when action = "flow"
    # The answer carries the customer's own data (orders, points …): in a group it goes privately.
    personal: bool = False

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name.lower() in RESERVED_INTENT_NAMES:
            raise ValueError(f"intent name {name!r} is reserved for messages that match no intent")
        return name

    @field_validator("regex")
    @classmethod
    def _regexes_compile(cls, patterns: list[str]) -> list[str]:
        return _check_regexes(patterns)

    @model_validator(mode="after")
    def _action_is_complete(self) -> Self:
        if self.action is Action.FLOW and not self.flow:
            raise ValueError(f"intent {self.name!r} has action = \"flow\" but names no flow")
        if self.action is not Action.FLOW and self.flow:
            raise ValueError(f"intent {self.name!r} names flow {self.flow!r}: set action = \"flow\"")
        if self.action is Action.REPLY and not (self.reply and self.reply.strip()):
            raise ValueError(f"intent {self.name!r} has action = \"reply\" but no reply text")
        if not (self.examples or self.exact or self.keywords or self.regex):
            raise ValueError(
                f"intent {self.name!r} can never match: give examples, exact, keywords or regex"
            )
        return self


class FaqEntry(BaseModel):
    """A question asked in several ways and its one answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    questions: list[Phrase] = Field(min_length=1)
    answer: Phrase


class NluSettings(BaseModel):
    """How messages are normalised and how sure the matcher must be before it answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The classifier answers only when its confidence — the probability, learnt from the
    # examples, that the message is the chosen intent — reaches `threshold`, and beats the
    # next most likely intent by `margin`; otherwise the message counts as not understood.
    threshold: float = Field(default=0.25, ge=0.0, le=1.0)
    margin: float = Field(default=0.05, ge=0.0, le=1.0)
    # An FAQ answer is given when the best question variant is at least this similar (cosine).
    faq_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    # Brand, product and SKU words jieba must keep whole, e.g. "云朵面霜" or "TEE-01".
    dictionary: list[Phrase] = []
    # canonical word → variants customers write; variants are rewritten before matching.
    synonyms: dict[Phrase, list[Phrase]] = {}
    # Phrases that belong to no intent (chit-chat, other services): they teach the classifier
    # what to leave alone, so such messages fall back instead of being forced into an intent.
    out_of_scope: list[Phrase] = []

    @model_validator(mode="after")
    def _synonyms_unambiguous(self) -> Self:
        seen: dict[str, str] = {}
        for canonical, variants in self.synonyms.items():
            for variant in variants:
                if variant in seen and seen[variant] != canonical:
                    raise ValueError(
                        f"synonym {variant!r} is listed under both {seen[variant]!r} and {canonical!r}"
                    )
                seen[variant] = canonical
        return self


def check_unique_names(intents: list[IntentSpec], faq: list[FaqEntry]) -> list[str]:
    """Problems the settings root should report: names used twice."""
    problems = []
    for kind, names in (("intent", [i.name for i in intents]), ("faq entry", [f.name for f in faq])):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                problems.append(f"{kind} {name!r} is defined more than once")
            seen.add(name)
    return problems
