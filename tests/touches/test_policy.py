"""The policy's checks, in the SPEC's order, as a pure function of the touch and the customer."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.channels.simulator.channel import CAPABILITIES as SIMULATOR
from bot.channels.wechat_mp.sender import PUSH_WINDOW, capabilities
from bot.outbox.policy import (
    Action,
    Decision,
    SentCounts,
    TouchPolicySettings,
    decide,
    quiet_until,
)
from flows.push_window import UNLIMITED, WindowAction, open_window
from storage.models import Customer, Touch

SETTINGS = TouchPolicySettings()
CAPABILITIES = {"wechat_mp": capabilities(4.5), "simulator": SIMULATOR}
NOON_SHANGHAI = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)  # Monday 12:00 in Shanghai
TEMPLATE = {"template_id": "ORDER_SHIPPED", "data": {"thing1": "您的订单已发货"}}


def customer(**fields: Any) -> Customer:
    values: dict[str, Any] = {
        "id": 1, "channel": "wechat_mp", "external_id": "o-alice", "subscribed": True,
        "timezone": "Asia/Shanghai", "marketing_opt_out": False,
        "window_expires_at": NOON_SHANGHAI + timedelta(hours=24), "window_quota": 5, "window_used": 0,
    }
    return Customer(**{**values, **fields})


def touch(kind: str = "marketing", **fields: Any) -> Touch:
    values: dict[str, Any] = {"id": 7, "kind": kind, "body": {"type": "text", "text": "新品上市"},
                              "template": None, "priority": 0, "defer_when_capped": False}
    return Touch(**{**values, **fields})


def check(t: Touch, c: Customer, now: datetime = NOON_SHANGHAI, held: bool = False,
          sent: SentCounts = SentCounts(), settings: TouchPolicySettings = SETTINGS) -> Decision:
    return decide(t, c, now=now, settings=settings, held_by_staff=held, sent=sent,
                  capabilities=CAPABILITIES.get(c.channel))


def test_an_ordinary_touch_in_an_open_window_is_sent() -> None:
    assert check(touch(), customer()) == Decision(Action.SEND)


# 1. consent
def test_an_opted_out_customer_gets_no_marketing_but_still_gets_service() -> None:
    assert check(touch("marketing"), customer(marketing_opt_out=True)) == Decision(Action.SKIP, "opted_out")
    assert check(touch("service"), customer(marketing_opt_out=True)).action is Action.SEND


def test_consent_comes_before_every_other_check() -> None:
    night = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
    decision = check(touch(), customer(marketing_opt_out=True, window_expires_at=None), now=night, held=True)
    assert decision == Decision(Action.SKIP, "opted_out")


# 2. staff-held conversation
def test_staff_holding_the_chat_defers_every_touch() -> None:
    for kind in ("service", "marketing"):
        decision = check(touch(kind), customer(), held=True)
        assert decision == Decision(Action.DEFER, "staff_held", NOON_SHANGHAI + timedelta(seconds=600))


# 3. quiet hours, in the customer's timezone
@pytest.mark.parametrize("zone, now, until", [
    # 23:00 in Shanghai → 09:00 the next morning there
    ("Asia/Shanghai", datetime(2026, 11, 23, 15, 0, tzinfo=UTC), datetime(2026, 11, 24, 1, 0, tzinfo=UTC)),
    # 03:00 in Shanghai → 09:00 the same morning
    ("Asia/Shanghai", datetime(2026, 11, 22, 19, 0, tzinfo=UTC), datetime(2026, 11, 23, 1, 0, tzinfo=UTC)),
    # noon UTC is 21:00 in Tokyo → 09:00 Tokyo the next day
    ("Asia/Tokyo", datetime(2026, 11, 23, 12, 0, tzinfo=UTC), datetime(2026, 11, 24, 0, 0, tzinfo=UTC)),
    # the same instant is 07:00 in New York → 09:00 New York (14:00 UTC)
    ("America/New_York", datetime(2026, 11, 23, 12, 0, tzinfo=UTC), datetime(2026, 11, 23, 14, 0, tzinfo=UTC)),
])
def test_quiet_hours_defer_to_their_end_in_the_customers_timezone(zone, now, until) -> None:
    assert check(touch(), customer(timezone=zone), now=now) == Decision(Action.DEFER, "quiet_hours", until)


def test_outside_quiet_hours_nothing_waits_and_an_unknown_zone_uses_the_default() -> None:
    assert check(touch(), customer(timezone="America/New_York")).action is Action.DEFER  # 23:00 there
    assert check(touch(), customer(timezone="Mars/Olympus")).action is Action.SEND  # noon in Shanghai


def test_quiet_hours_within_one_day_and_for_service_touches_by_setting() -> None:
    daytime = TouchPolicySettings(quiet_hours_start=time(12, 0), quiet_hours_end=time(14, 0))
    assert quiet_until(NOON_SHANGHAI, ZoneInfo("Asia/Shanghai"), daytime) == NOON_SHANGHAI + timedelta(hours=2)
    night = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    assert check(touch("service"), customer(), now=night).action is Action.DEFER
    lenient = TouchPolicySettings(quiet_hours_service=False)
    assert check(touch("service"), customer(), now=night, settings=lenient).action is Action.SEND


# 4. frequency caps
def test_over_the_daily_cap_marketing_is_skipped_or_deferred_to_the_next_local_day() -> None:
    sent = SentCounts(today=1, this_week=1)
    assert check(touch(), customer(), sent=sent) == Decision(Action.SKIP, "frequency_cap_day")
    midnight = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # 00:00 on Tuesday in Shanghai
    assert check(touch(defer_when_capped=True), customer(), sent=sent) == Decision(
        Action.DEFER, "frequency_cap_day", midnight)
    assert check(touch("service"), customer(), sent=sent).action is Action.SEND


def test_over_the_weekly_cap_marketing_waits_for_monday() -> None:
    sent = SentCounts(today=0, this_week=3)
    next_monday = datetime(2026, 11, 29, 16, 0, tzinfo=UTC)  # Monday 30 Nov 00:00 in Shanghai
    assert check(touch(), customer(), sent=sent) == Decision(Action.SKIP, "frequency_cap_week")
    assert check(touch(defer_when_capped=True), customer(), sent=sent) == Decision(
        Action.DEFER, "frequency_cap_week", next_monday)


# 5. the channel's window and quota
def test_outside_the_window_service_falls_back_to_its_template_and_marketing_is_skipped() -> None:
    closed = customer(window_expires_at=NOON_SHANGHAI - timedelta(seconds=1))
    assert check(touch("marketing"), closed) == Decision(Action.SKIP, "window_closed")
    assert check(touch("service"), closed) == Decision(Action.SKIP, "window_closed")
    assert check(touch("service", template=TEMPLATE), closed) == Decision(Action.TEMPLATE, "window_closed")
    used_up = customer(window_used=5)
    assert check(touch("marketing"), used_up) == Decision(Action.SKIP, "window_quota_used")
    assert check(touch("service", template=TEMPLATE), used_up) == Decision(Action.TEMPLATE, "window_quota_used")


def test_unfollowed_customers_get_nothing_and_channels_without_windows_always_may_push() -> None:
    assert check(touch("service", template=TEMPLATE), customer(subscribed=False)) == Decision(
        Action.SKIP, "unfollowed")
    assert check(touch(), customer(channel="simulator", window_expires_at=None)).action is Action.SEND


def test_a_message_opens_five_in_48_hours_and_a_new_message_restores_the_quota() -> None:
    c = customer(window_expires_at=None, window_quota=0)
    open_window(c, WindowAction.MESSAGE, NOON_SHANGHAI, PUSH_WINDOW)
    assert (c.window_expires_at, c.window_quota, c.window_used) == (NOON_SHANGHAI + timedelta(hours=48), 5, 0)
    c.window_used = 5
    assert check(touch(), c).reason == "window_quota_used"
    later = NOON_SHANGHAI + timedelta(hours=1)
    open_window(c, WindowAction.MESSAGE, later, PUSH_WINDOW)
    assert (c.window_expires_at, c.window_used) == (later + timedelta(hours=48), 0)
    assert check(touch(), c, now=later + timedelta(hours=48)).reason == "window_closed"


def test_a_follow_opens_three_within_a_minute() -> None:
    c = customer(window_expires_at=None, window_quota=0)
    open_window(c, WindowAction.FOLLOW, NOON_SHANGHAI, PUSH_WINDOW)
    assert (c.window_quota, c.window_expires_at) == (3, NOON_SHANGHAI + timedelta(minutes=1))
    c.window_used = 2
    assert check(touch(), c, now=NOON_SHANGHAI + timedelta(seconds=59)).action is Action.SEND
    assert check(touch(), c, now=NOON_SHANGHAI + timedelta(seconds=61)).reason == "window_closed"
    c.window_used = 3
    assert check(touch(), c, now=NOON_SHANGHAI + timedelta(seconds=30)).reason == "window_quota_used"


def test_a_click_keeps_a_larger_open_allowance_but_replaces_a_spent_one() -> None:
    roomy = customer(window_used=1)  # 4 left for 24 h
    open_window(roomy, WindowAction.MENU, NOON_SHANGHAI, PUSH_WINDOW)
    assert (roomy.window_quota, roomy.window_used) == (5, 1)
    spent = customer(window_used=4)  # 1 left: a click's 3-in-a-minute is more
    open_window(spent, WindowAction.MENU, NOON_SHANGHAI, PUSH_WINDOW)
    assert (spent.window_quota, spent.window_used, spent.window_expires_at) == (
        3, 0, NOON_SHANGHAI + timedelta(minutes=1))


def test_a_payment_opens_an_unlimited_window() -> None:
    c = customer(window_used=5)
    open_window(c, WindowAction.PAYMENT, NOON_SHANGHAI, PUSH_WINDOW)
    assert c.window_quota == UNLIMITED
    c.window_used = 50
    assert check(touch(), c).action is Action.SEND
    open_window(c, WindowAction.MESSAGE, NOON_SHANGHAI, PUSH_WINDOW)  # never narrows an unlimited window
    assert c.window_quota == UNLIMITED
