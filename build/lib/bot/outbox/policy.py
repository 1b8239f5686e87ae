"""The touch policy: may this proactive message go out now, later, as a template, or never?

Checks run in the SPEC's order — consent, staff-held conversation, quiet hours, frequency caps,
the channel's window and quota — each time a touch is about to be sent, not only when it was
scheduled. `decide` is pure; the dispatcher gathers its inputs under the customer's row lock.
The inbound side (window opened by the customer's actions, 退订/订阅) is `flows.consent`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from bot.channels.base import Capabilities
from flows.push_window import window_remaining
from flows.timezones import DEFAULT_TIMEZONE, ZoneName, zone_or_default
from storage.models import Customer, Touch


class TouchPolicySettings(BaseModel):
    """`[touches]`: when and how often proactive messages may go out, and how they are dispatched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quiet_hours_start: time = time(21, 0)
    quiet_hours_end: time = time(9, 0)
    quiet_hours_service: bool = True  # service touches wait for the morning too
    default_timezone: ZoneName = DEFAULT_TIMEZONE
    marketing_per_day: int = Field(1, ge=1)
    marketing_per_week: int = Field(3, ge=1)
    staff_hold_recheck_seconds: int = Field(600, ge=10)
    max_attempts: int = Field(5, ge=1, le=50)
    backoff_seconds: float = Field(30.0, gt=0)
    backoff_max_seconds: float = Field(3600.0, gt=0)
    lease_seconds: float = Field(120.0, gt=0)
    batch_size: int = Field(100, ge=1, le=5000)
    concurrency: int = Field(8, ge=1, le=100)
    dispatch_interval_seconds: float = Field(5.0, gt=0)
    unsubscribe_reply: str = "已为您退订营销消息，回复“订阅”可重新订阅。服务通知（订单、售后）不受影响。"
    resubscribe_reply: str = "已为您重新订阅，我们会适时为您推送优惠和活动消息。回复“退订”可随时退订。"


# ---- the decision ---------------------------------------------------------------------------

class Action(StrEnum):
    SEND = "send"  # the body, through the customer-service message API
    TEMPLATE = "template"  # the service touch's template message, outside the window
    DEFER = "defer"  # try again at `until`
    SKIP = "skip"  # never: `reason` says why


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class SentCounts:
    """Marketing touches already sent to the customer in their current local day and week."""

    today: int = 0
    this_week: int = 0


def customer_zone(customer: Customer, settings: TouchPolicySettings) -> ZoneInfo:
    return zone_or_default(customer.timezone, settings.default_timezone)


def quiet_until(now: datetime, zone: ZoneInfo, settings: TouchPolicySettings) -> datetime | None:
    """The end of the quiet hours `now` falls in (customer's local time), or None outside them."""
    start, end = settings.quiet_hours_start, settings.quiet_hours_end
    if start == end:
        return None
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    wraps = start > end  # 21:00–09:00 spans midnight
    inside = (clock >= start or clock < end) if wraps else (start <= clock < end)
    if not inside:
        return None
    # Inside the quiet hours, their end is the first `end` o'clock after now.
    candidate = datetime.combine(local.date(), end, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), end, tzinfo=zone)
    return candidate.astimezone(now.tzinfo)


def period_starts(now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime, datetime, datetime]:
    """Start of the customer's local day, the next day, the week (Monday) and the next week."""
    local = now.astimezone(zone)
    day = datetime.combine(local.date(), time(0), tzinfo=zone)
    week = day - timedelta(days=local.weekday())
    next_day = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
    next_week = datetime.combine(week.date() + timedelta(days=7), time(0), tzinfo=zone)
    return day, next_day, week, next_week


def decide(touch: Touch, customer: Customer, *, now: datetime, settings: TouchPolicySettings,
           held_by_staff: bool, sent: SentCounts, capabilities: Capabilities | None) -> Decision:
    """The SPEC's checks, in order. The first that objects decides. `capabilities` are those of
    the customer's channel (None: it has no sender, and the dispatcher fails the touch)."""
    marketing = touch.kind == "marketing"
    # 1. Consent: 退订 stops marketing; service touches continue.
    if marketing and customer.marketing_opt_out:
        return Decision(Action.SKIP, "opted_out")
    # 2. Staff hold the conversation: the bot keeps quiet until they hand it back.
    if held_by_staff:
        return Decision(Action.DEFER, "staff_held", now + timedelta(seconds=settings.staff_hold_recheck_seconds))
    zone = customer_zone(customer, settings)
    # 3. Quiet hours in the customer's timezone: deferred, not dropped.
    if marketing or settings.quiet_hours_service:
        until = quiet_until(now, zone, settings)
        if until is not None:
            return Decision(Action.DEFER, "quiet_hours", until)
    # 4. Frequency caps, for marketing.
    if marketing:
        _, next_day, _, next_week = period_starts(now, zone)
        if sent.this_week >= settings.marketing_per_week:
            if touch.defer_when_capped:
                return Decision(Action.DEFER, "frequency_cap_week", next_week)
            return Decision(Action.SKIP, "frequency_cap_week")
        if sent.today >= settings.marketing_per_day:
            if touch.defer_when_capped:
                return Decision(Action.DEFER, "frequency_cap_day", next_day)
            return Decision(Action.SKIP, "frequency_cap_day")
    # 5. The channel's window and quota.
    if capabilities is not None and capabilities.push_window is not None:
        if not customer.subscribed:
            return Decision(Action.SKIP, "unfollowed")
        remaining = window_remaining(customer, now)
        if remaining == 0:
            closed = customer.window_expires_at is None or customer.window_expires_at <= now
            reason = "window_closed" if closed else "window_quota_used"
            if not marketing and touch.template and capabilities.template_fallback:
                return Decision(Action.TEMPLATE, reason)
            return Decision(Action.SKIP, reason)
    # 6. Idempotency: the key is unique and the dispatcher only sends a touch still pending
    #    under its own lease, marking it sent in the transaction that stores the transcript.
    return Decision(Action.SEND)


# ---- inbound: consent and window ------------------------------------------------------------
