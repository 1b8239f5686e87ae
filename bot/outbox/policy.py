"""The touch policy: may this proactive message go out now, later, as a template, or never?

Checks run in the SPEC's order — consent, staff-held conversation, quiet hours, frequency caps,
the channel's window and quota — each time a touch is about to be sent, not only when it was
scheduled. `decide` is pure; the dispatcher gathers its inputs under the customer's row lock.
The inbound side (window opened by the customer's actions, 退订/订阅) is `ConsentAndWindowStage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.timezones import check_zone_name, zone_or_default
from flows.turn import Turn
from handlers.messages import EventKind, InboundKind, Reply
from storage.conversations import log_event
from storage.models import Customer, Touch

DEFAULT_TIMEZONE = "Asia/Shanghai"


class TouchPolicySettings(BaseModel):
    """`[touches]`: when and how often proactive messages may go out, and how they are dispatched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quiet_hours_start: time = time(21, 0)
    quiet_hours_end: time = time(9, 0)
    quiet_hours_service: bool = True  # service touches wait for the morning too
    default_timezone: str = DEFAULT_TIMEZONE
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

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        return check_zone_name(name)


# ---- the channel's window, as WeChat counts it ----------------------------------------------

class WindowAction(StrEnum):
    MESSAGE = "message"  # the customer sent a message
    MENU = "menu"  # clicked a click/scancode menu
    FOLLOW = "follow"  # followed the account or scanned a QR code
    PAYMENT = "payment"  # paid


UNLIMITED = -1  # window_quota for a window without a message limit (after a payment)

# (messages, duration) per action; WECHAT.md, Sending (official doc since 2023-06-12).
WINDOW_RULES: dict[str, dict[WindowAction, tuple[int, timedelta]]] = {
    "wechat_mp": {
        WindowAction.MESSAGE: (5, timedelta(hours=48)),
        WindowAction.MENU: (3, timedelta(minutes=1)),
        WindowAction.FOLLOW: (3, timedelta(minutes=1)),
        WindowAction.PAYMENT: (UNLIMITED, timedelta(hours=48)),
    },
    "wecom_kf": {WindowAction.MESSAGE: (5, timedelta(hours=48))},
}


def window_remaining(customer: Customer, now: datetime) -> int | None:
    """Messages still allowed in the open window; None when unlimited, 0 when closed."""
    if customer.window_expires_at is None or customer.window_expires_at <= now:
        return 0
    if customer.window_quota == UNLIMITED:
        return None
    return max(customer.window_quota - customer.window_used, 0)


def open_window(customer: Customer, action: WindowAction, now: datetime) -> bool:
    """Open the window a customer's action grants; returns whether the window changed.

    WeChat says a new action opens a new window. When the open one still allows more (a
    message's 5-in-48 h window, then a menu click's 3-in-a-minute), keep the larger allowance:
    we track one window per customer and must never count on more than WeChat grants.
    """
    rule = WINDOW_RULES.get(customer.channel, {}).get(action)
    if rule is None:
        return False
    quota, duration = rule
    remaining = window_remaining(customer, now)
    if action is not WindowAction.PAYMENT:
        if remaining is None:  # a payment's unlimited window is still open
            return False
        expires = customer.window_expires_at
        if (action is not WindowAction.MESSAGE and remaining >= quota and expires is not None
                and expires >= now + duration):
            return False
    customer.window_expires_at = now + duration
    # Only what changes: every message renews its window, and setting a mapped attribute is not free.
    if customer.window_quota != quota:
        customer.window_quota = quota
    if customer.window_used:
        customer.window_used = 0
    return True


def close_window(customer: Customer) -> None:
    customer.window_expires_at = None
    customer.window_quota = 0
    customer.window_used = 0


def count_window_send(customer: Customer) -> None:
    customer.window_used += 1


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
           held_by_staff: bool, sent: SentCounts) -> Decision:
    """The SPEC's checks, in order. The first that objects decides."""
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
    if customer.channel in WINDOW_RULES:
        if not customer.subscribed:
            return Decision(Action.SKIP, "unfollowed")
        remaining = window_remaining(customer, now)
        if remaining == 0:
            closed = customer.window_expires_at is None or customer.window_expires_at <= now
            reason = "window_closed" if closed else "window_quota_used"
            if not marketing and touch.template:
                return Decision(Action.TEMPLATE, reason)
            return Decision(Action.SKIP, reason)
    # 6. Idempotency: the key is unique and the dispatcher only sends a touch still pending
    #    under its own lease, marking it sent in the transaction that stores the transcript.
    return Decision(Action.SEND)


# ---- inbound: consent and window ------------------------------------------------------------

UNSUBSCRIBE_WORDS = frozenset({"退订", "td"})
SUBSCRIBE_WORDS = frozenset({"订阅"})
_FOLLOW_EVENTS = {EventKind.SUBSCRIBE, EventKind.SCAN}


def _word(text: str) -> str:
    return text.strip().casefold()


class ConsentAndWindowStage:
    """Pipeline stage: opens the push window each customer action grants, and handles 退订/订阅.

    退订 / TD (exact, any case, trimmed) stops marketing touches; 订阅 or any later message
    resubscribes. Consent changes go to the event log.
    """

    def __init__(self, settings: TouchPolicySettings):
        self._settings = settings

    async def before_route(self, turn: Turn) -> None:
        inbound, customer = turn.inbound, turn.customer
        if inbound.kind is InboundKind.EVENT:
            if inbound.event is EventKind.UNSUBSCRIBE:
                close_window(customer)
            elif inbound.event in _FOLLOW_EVENTS:
                open_window(customer, WindowAction.FOLLOW, turn.now)
            elif inbound.event is EventKind.CLICK:
                open_window(customer, WindowAction.MENU, turn.now)
            return
        if inbound.kind is InboundKind.UNKNOWN:
            return
        open_window(customer, WindowAction.MESSAGE, turn.now)
        word = _word(inbound.text) if inbound.kind is InboundKind.TEXT else ""
        if word in UNSUBSCRIBE_WORDS:
            if not customer.marketing_opt_out:
                self._change(turn, opt_out=True, via=inbound.text.strip())
            turn.replies.append(Reply(self._settings.unsubscribe_reply, intent="unsubscribe", source="consent"))
            turn.handled = True
            return
        if customer.marketing_opt_out:
            self._change(turn, opt_out=False, via=inbound.text.strip() if word in SUBSCRIBE_WORDS else "message")
        if word in SUBSCRIBE_WORDS:
            turn.replies.append(Reply(self._settings.resubscribe_reply, intent="subscribe", source="consent"))
            turn.handled = True

    async def after_route(self, turn: Turn) -> None:
        return None

    def _change(self, turn: Turn, *, opt_out: bool, via: str) -> None:
        turn.customer.marketing_opt_out = opt_out
        turn.customer.consent_changed_at = turn.now
        log_event(turn.session, turn.customer.id, "marketing_unsubscribed" if opt_out else "marketing_subscribed",
                  turn.now, {"via": via, "channel": turn.inbound.channel})


__all__ = [
    "Action", "ConsentAndWindowStage", "Decision", "SentCounts", "TouchPolicySettings", "WindowAction",
    "count_window_send", "decide", "open_window",
]
