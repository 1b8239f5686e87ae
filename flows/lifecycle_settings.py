"""Lifecycle and points thresholds from `[lifecycle]` and `[points]` in the config file."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.stages import STAGES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LifecycleSettings(_Strict):
    # interest: N engaged interactions within D days.
    interest_interactions: int = Field(3, ge=1)
    interest_window_days: int = Field(7, ge=1)
    # Messages whose intent is one of these count as engaged interactions …
    engaged_intents: list[str] = ["product_inquiry", "promotion", "points_query", "membership",
                                  "store_info"]
    # … and so do these actions (menu clicks, link views, offline store visits).
    # (group_message: a member's first message of the day in a group.)
    engaged_actions: list[str] = ["menu_click", "link_view", "store_visit", "group_message"]
    # loyalty: K orders within P days, or a lifetime spend of at least S yuan.
    loyalty_orders: int = Field(3, ge=1)
    loyalty_period_days: int = Field(365, ge=1)
    loyalty_lifetime_spend: Decimal = Field(Decimal(2000), ge=0)
    # at_risk: no purchase for more than max(factor × the customer's usual interval between
    # orders, min days); or this many touches sent since the customer's last message.
    at_risk_interval_factor: float = Field(2.0, gt=0)
    at_risk_min_days: int = Field(60, ge=1)
    at_risk_unanswered_touches: int = Field(3, ge=0)  # 0 turns the rule off
    at_risk_stages: list[str] = ["purchase", "use", "loyalty"]
    # … or this many customer groups left within `at_risk_group_leave_days` (0 turns it off).
    at_risk_group_leaves: int = Field(1, ge=0)
    at_risk_group_leave_days: int = Field(30, ge=1)
    # churned: inactive (no message, order, visit) for Y days; or unsubscribed.
    churn_inactive_days: int = Field(180, ge=1)
    churn_on_unsubscribe: bool = True
    # The sweep moves this many customers per transaction.
    sweep_batch_size: int = Field(5000, ge=1, le=10000)

    @field_validator("at_risk_stages")
    @classmethod
    def _known_stages(cls, stages: list[str]) -> list[str]:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
        return stages


class PointsSettings(_Strict):
    # Points earned per yuan paid (0 turns earning off); rounded down.
    earn_per_yuan: Decimal = Field(Decimal(1), ge=0)
    # Earned points expire this many days after they were earned.
    validity_days: int = Field(365, ge=1)
    # "Expiring soon" in the points summary: within this many days.
    expiring_soon_days: int = Field(30, ge=1)
