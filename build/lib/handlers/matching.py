"""The contract between the router and everything that recognises what a customer wants."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Action(StrEnum):
    REPLY = "reply"
    FLOW = "flow"
    HANDOFF = "handoff"


@dataclass(frozen=True, slots=True)
class Match:
    """What a matcher recognised in one message.

    `reply` is a template with variables such as `{nickname}`; `None` means the action alone
    (start a flow, hand off) answers the customer.
    """

    intent: str
    source: str  # "rule", "classifier", "faq", ...
    confidence: float  # 0..1
    reply: str | None = None
    action: Action = Action.REPLY
    flow: str | None = None


class Matcher(Protocol):
    """Recognises one message's text; `None` when it does not know."""

    def match(self, text: str) -> Match | None: ...
