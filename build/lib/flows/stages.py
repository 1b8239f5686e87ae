"""The lifecycle stages a customer moves through, in order: the one list of their names."""

from __future__ import annotations

from enum import StrEnum


class LifecycleStageName(StrEnum):
    CONTACT = "contact"
    INTEREST = "interest"
    PURCHASE = "purchase"
    USE = "use"
    LOYALTY = "loyalty"
    AT_RISK = "at_risk"
    CHURNED = "churned"


STAGES: tuple[str, ...] = tuple(LifecycleStageName)
