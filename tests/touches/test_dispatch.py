"""Dispatch: due touches claimed under a lease, re-checked at send time, sent once, outcomes recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select, update

from bot.channels.base import Capabilities, Delivery, DeliveryResult, OutboundMessage, Text
from bot.channels.wechat_mp.api import WechatApi
from bot.channels.wechat_mp.sender import PUSH_WINDOW, WechatMpSender
from bot.outbox.dispatch import claim_due_touches, dispatch_due_touches
from bot.outbox.policy import TouchPolicySettings
from storage.models import Conversation, Customer, Message, Touch
from storage.touches import enqueue_touch
from tests.support.clock import FakeClock
from tests.support.wechat import APP_ID, APP_SECRET
from tests.touches.conftest import T0, add_customer

SETTINGS = TouchPolicySettings(backoff_seconds=10, max_attempts=3)
TEXT = {"type": "text", "text": "您的订单已发货，请注意查收。"}
TEMPLATE = {"template_id": "ORDER_SHIPPED", "data": {"thing1": "订单A1001已发货"}, "url": "https://example.com/o/A1001"}
OPEN = {"window_expires_at": T0 + timedelta(hours=47), "window_quota": 5, "window_used": 0}


@pytest.fixture
async def senders(fake_api, sessions) -> AsyncIterator[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        api = WechatApi(http, sessions, FakeClock(), base_url=fake_api.base_url, app_id=APP_ID,
                        app_secret=APP_SECRET, timeout_seconds=2)
        yield {"wechat_mp": WechatMpSender(api)}


async def enqueue(sessions, customer_id: int, key: str, kind: str = "service", body: dict | None = None,
                  **kwargs: Any) -> int:
    async with sessions() as session, session.begin():
        touch = await enqueue_touch(session, customer_id=customer_id, kind=kind, body=body or TEXT,
                                    due_at=kwargs.pop("due_at", T0), idempotency_key=key, now=T0, **kwargs)
        assert touch is not None
        return touch.id


async def touch_row(sessions, touch_id: int) -> Touch:
    async with sessions() as session:
        return (await session.execute(select(Touch).where(Touch.id == touch_id))).scalar_one()


async def dispatch(sessions, senders, clock, settings=SETTINGS):
    return await dispatch_due_touches(sessions, senders, settings, clock, "test")


async def test_a_due_touch_is_sent_once_with_its_transcript_row_and_window_count(sessions, senders, fake_api) -> None:
    customer_id = await add_customer(sessions, **OPEN)
    touch_id = await enqueue(sessions, customer_id, "shipped:A1001")
    await enqueue(sessions, customer_id, "later", due_at=T0 + timedelta(hours=1))
    clock = FakeClock(T0)
    stats = await dispatch(sessions, senders, clock)
    assert (stats.claimed, stats.sent) == (1, 1)
    assert fake_api.sent == [{"touser": "o-alice", "msgtype": "text", "text": {"content": TEXT["text"]}}]
    row = await touch_row(sessions, touch_id)
    assert (row.status, row.attempts, row.sent_at, row.lease_until) == ("sent", 1, T0, None)
    async with sessions() as session:
        message = (await session.execute(select(Message))).scalar_one()
        customer = await session.get(Customer, customer_id)
    assert (message.direction, message.delivery, message.text, message.payload["touch_id"]) == (
        "out", "push", TEXT["text"], touch_id)
    assert customer is not None and customer.window_used == 1
    assert (await dispatch(sessions, senders, clock)).claimed == 0  # nothing sent twice
    assert len(fake_api.sent) == 1


async def test_news_and_image_bodies_go_out_as_customer_service_messages(sessions, senders, fake_api) -> None:
    customer_id = await add_customer(sessions, **OPEN)
    article = {"title": "冬季新品", "description": "羽绒服上新", "url": "https://example.com/n", "picurl": "https://example.com/p.jpg"}
    await enqueue(sessions, customer_id, "news", "marketing", {"type": "news", "articles": [article]})
    await enqueue(sessions, customer_id, "image", "service", {"type": "image", "media_id": "MEDIA1"})
    settings = TouchPolicySettings(marketing_per_day=5)
    await dispatch(sessions, senders, FakeClock(T0), settings)
    assert sorted(fake_api.sent, key=lambda p: p["msgtype"]) == [
        {"touser": "o-alice", "msgtype": "image", "image": {"media_id": "MEDIA1"}},
        {"touser": "o-alice", "msgtype": "news", "news": {"articles": [article]}},
    ]


async def test_outside_the_window_service_uses_its_template_and_marketing_is_skipped(sessions, senders, fake_api) -> None:
    customer_id = await add_customer(sessions)  # never wrote: no window
    service = await enqueue(sessions, customer_id, "svc", "service", template=TEMPLATE)
    marketing = await enqueue(sessions, customer_id, "mkt", "marketing")
    bare = await enqueue(sessions, customer_id, "bare", "service")
    await dispatch(sessions, senders, FakeClock(T0))
    assert fake_api.sent == [{"touser": "o-alice", "template_id": "ORDER_SHIPPED", "url": TEMPLATE["url"],
                              "data": {"thing1": {"value": "订单A1001已发货"}}}]
    assert [((r := await touch_row(sessions, i)).status, r.reason) for i in (service, marketing, bare)] == [
        ("sent", "template: window_closed"), ("skipped", "window_closed"), ("skipped", "window_closed")]


async def test_the_quota_is_counted_per_window(sessions, senders, fake_api) -> None:
    customer_id = await add_customer(sessions, window_expires_at=T0 + timedelta(minutes=1), window_quota=3,
                                     window_used=0)
    ids = [await enqueue(sessions, customer_id, f"k{n}", priority=10 - n) for n in range(4)]
    await dispatch(sessions, senders, FakeClock(T0))
    assert len(fake_api.sent) == 3
    assert [(await touch_row(sessions, i)).status for i in ids] == ["sent", "sent", "sent", "skipped"]


async def test_checks_run_again_at_send_time(sessions, senders, fake_api) -> None:
    customer_id = await add_customer(sessions, **OPEN)
    touch_id = await enqueue(sessions, customer_id, "nudge", "marketing", due_at=T0 + timedelta(hours=1))
    async with sessions() as session, session.begin():  # opted out after it was scheduled
        await session.execute(update(Customer).values(marketing_opt_out=True))
    await dispatch(sessions, senders, FakeClock(T0 + timedelta(hours=1)))
    assert fake_api.sent == []
    assert ((row := await touch_row(sessions, touch_id)).status, row.reason) == ("skipped", "opted_out")


async def test_staff_hold_and_quiet_hours_defer_instead_of_dropping(sessions, senders, fake_api) -> None:
    customer_id = await add_customer(sessions, **OPEN)
    async with sessions() as session, session.begin():
        session.add(Conversation(customer_id=customer_id, state="staff", last_seq=0, not_understood_streak=0,
                                 started_at=T0, updated_at=T0))
    touch_id = await enqueue(sessions, customer_id, "svc")
    clock = FakeClock(T0)
    await dispatch(sessions, senders, clock)
    row = await touch_row(sessions, touch_id)
    assert (row.status, row.reason, row.due_at) == ("pending", "deferred: staff_held", T0 + timedelta(minutes=10))
    async with sessions() as session, session.begin():
        await session.execute(update(Conversation).values(state="bot"))
    clock.current = T0 + timedelta(hours=12)  # 22:00 in Shanghai
    await dispatch(sessions, senders, clock)
    row = await touch_row(sessions, touch_id)
    morning = T0 + timedelta(hours=23)  # 09:00 the next day in Shanghai
    assert (row.status, row.reason, row.due_at) == ("pending", "deferred: quiet_hours", morning)
    clock.current = morning
    await dispatch(sessions, senders, clock)
    assert (await touch_row(sessions, touch_id)).status == "sent" and len(fake_api.sent) == 1


async def test_caps_skip_or_defer_marketing_by_priority(sessions, senders, fake_api) -> None:
    customer_id = await add_customer(sessions, **OPEN)
    low = await enqueue(sessions, customer_id, "low", "marketing", priority=1, defer_when_capped=True)
    high = await enqueue(sessions, customer_id, "high", "marketing", priority=9, defer_when_capped=True)
    plain = await enqueue(sessions, customer_id, "plain", "marketing", priority=5)
    await dispatch(sessions, senders, FakeClock(T0))
    rows = {name: await touch_row(sessions, i) for name, i in (("low", low), ("high", high), ("plain", plain))}
    midnight = T0 + timedelta(hours=14)  # 00:00 in Shanghai
    assert rows["high"].status == "sent"
    assert (rows["plain"].status, rows["plain"].reason) == ("skipped", "frequency_cap_day")
    assert (rows["low"].status, rows["low"].due_at) == ("pending", midnight)


@pytest.mark.parametrize("errcode, reason", [(45015, "window_closed (45015)"), (45047, "window_quota_used (45047)")])
async def test_window_errors_are_skipped_and_never_retried(sessions, senders, fake_api, errcode, reason) -> None:
    customer_id = await add_customer(sessions, **OPEN)
    touch_id = await enqueue(sessions, customer_id, "svc")
    fake_api.send_errors = [errcode]
    clock = FakeClock(T0)
    await dispatch(sessions, senders, clock)
    row = await touch_row(sessions, touch_id)
    assert (row.status, row.reason, row.attempts) == ("skipped", reason, 1)
    async with sessions() as session:
        assert (await session.execute(select(Message))).first() is None  # no transcript for a skip
    clock.advance(days=1)
    assert (await dispatch(sessions, senders, clock)).claimed == 0


async def test_wechats_system_busy_is_retried_and_other_refusals_fail_at_once(sessions, senders, fake_api) -> None:
    customer_id = await add_customer(sessions, **OPEN)
    busy = await enqueue(sessions, customer_id, "busy")
    fake_api.send_errors = [-1]
    await dispatch(sessions, senders, FakeClock(T0))
    row = await touch_row(sessions, busy)
    assert (row.status, row.reason) == ("pending", "retrying: WeChat errcode -1: refused by fake")
    blocked = await enqueue(sessions, customer_id, "blocked", due_at=T0)
    fake_api.send_errors = [40003]  # not a follower's openid
    await dispatch(sessions, senders, FakeClock(T0))
    row = await touch_row(sessions, blocked)
    assert (row.status, row.attempts, row.reason) == ("failed", 1, "WeChat errcode 40003: refused by fake")


@dataclass
class ScriptedChannel:
    """A channel that answers its sends with scripted neutral outcomes, as any platform's folder does."""

    results: list[DeliveryResult]
    capabilities: Capabilities = Capabilities(push_window=PUSH_WINDOW)
    sent: list[tuple[str, OutboundMessage]] = field(default_factory=list)

    async def prepare(self) -> None:
        return None

    async def send(self, user_id: str, message: OutboundMessage) -> DeliveryResult:
        self.sent.append((user_id, message))
        return self.results.pop(0)


@pytest.mark.parametrize("result, status, reason, window", [
    (DeliveryResult(Delivery.WINDOW_CLOSED), "skipped", "window_closed", (None, 0)),
    (DeliveryResult(Delivery.QUOTA_USED, "over the limit", "E6"), "skipped", "window_quota_used (E6)",
     (OPEN["window_expires_at"], 5)),
    (DeliveryResult(Delivery.RETRY_LATER, "busy"), "pending", "retrying: busy", (OPEN["window_expires_at"], 0)),
    (DeliveryResult(Delivery.REFUSED, "account deleted"), "failed", "account deleted",
     (OPEN["window_expires_at"], 0)),
])
async def test_a_channels_neutral_outcome_decides_what_becomes_of_the_touch(sessions, result, status, reason,
                                                                           window) -> None:
    customer_id = await add_customer(sessions, **OPEN)
    touch_id = await enqueue(sessions, customer_id, "svc")
    channel = ScriptedChannel([result])
    await dispatch(sessions, {"wechat_mp": channel}, FakeClock(T0))
    assert channel.sent == [("o-alice", Text(TEXT["text"]))]
    row = await touch_row(sessions, touch_id)
    assert (row.status, row.reason) == (status, reason)
    async with sessions() as session:
        customer = await session.get(Customer, customer_id)
        assert (await session.execute(select(Message))).first() is None
    assert customer is not None and (customer.window_expires_at, customer.window_used) == window


async def test_server_errors_are_retried_with_backoff_then_fail(sessions, senders, fake_api) -> None:
    customer_id = await add_customer(sessions, **OPEN)
    touch_id = await enqueue(sessions, customer_id, "svc")
    fake_api.send_statuses = [502, 502, 502]
    clock = FakeClock(T0)
    await dispatch(sessions, senders, clock)
    row = await touch_row(sessions, touch_id)
    assert (row.status, row.attempts, row.due_at) == ("pending", 1, T0 + timedelta(seconds=10))
    assert row.reason == "retrying: WechatUnavailable: /cgi-bin/message/custom/send: HTTP 502 Bad Gateway"
    clock.advance(seconds=9)
    assert (await dispatch(sessions, senders, clock)).claimed == 0  # not yet
    clock.advance(seconds=1)
    await dispatch(sessions, senders, clock)
    assert (await touch_row(sessions, touch_id)).due_at == clock.now() + timedelta(seconds=20)  # doubled
    clock.advance(seconds=20)
    await dispatch(sessions, senders, clock)
    row = await touch_row(sessions, touch_id)
    assert (row.status, row.attempts) == ("failed", 3)
    assert "502" in row.reason


async def test_a_touch_leased_by_a_dead_worker_is_retaken_after_the_lease(sessions, senders, fake_api) -> None:
    customer_id = await add_customer(sessions, **OPEN)
    touch_id = await enqueue(sessions, customer_id, "svc")
    clock = FakeClock(T0)
    claimed, _ = await claim_due_touches(sessions, clock.now(), limit=10, lease_seconds=120)
    assert claimed == [(touch_id, customer_id)]  # …and that worker dies here
    assert (await dispatch(sessions, senders, clock)).claimed == 0
    clock.advance(seconds=121)
    stats = await dispatch(sessions, senders, clock)
    assert (stats.sent, len(fake_api.sent)) == (1, 1)


async def test_a_cancelled_touch_is_dropped_even_after_it_was_claimed(sessions, senders, fake_api) -> None:
    from bot.outbox.dispatch import DispatchStats, claim_touches, deliver_claimed
    from storage.touches import cancel_touches

    customer_id = await add_customer(sessions, **OPEN)
    touch_id = await enqueue(sessions, customer_id, "mkt", "marketing")
    clock = FakeClock(T0)
    engine = sessions.kw["bind"]
    claimed, lease = await claim_touches(engine, clock.now(), limit=10, lease_seconds=120)
    assert [touch.id for touch in claimed] == [touch_id]
    async with sessions() as session, session.begin():
        await cancel_touches(session, customer_id=customer_id, reason="order_paid")
    stats = DispatchStats()
    await deliver_claimed(engine, senders, SETTINGS, clock, claimed, lease, stats)
    assert stats.dropped == 1 and fake_api.sent == []
    row = await touch_row(sessions, touch_id)
    assert (row.status, row.reason) == ("skipped", "order_paid")


async def _group_of_three(sessions) -> list[int]:
    """Three customers with an open window, one due touch each; the first already has a chat."""
    ids = [await add_customer(sessions, f"o-{name}", **OPEN) for name in ("ann", "ben", "cat")]
    async with sessions() as session, session.begin():
        session.add(Conversation(customer_id=ids[0], state="bot", last_seq=2, not_understood_streak=0,
                                 started_at=T0, updated_at=T0))
    for customer_id in ids:
        await enqueue(sessions, customer_id, f"svc-{customer_id}")
    return ids


async def _books_balance(sessions) -> list[Message]:
    """Every conversation's last_seq is its number of rows (from the seeded 2); returns the touch rows."""
    async with sessions() as session:
        messages = list((await session.execute(select(Message).order_by(Message.id))).scalars())
        for conversation in (await session.execute(select(Conversation))).scalars():
            rows = [m for m in messages if m.conversation_id == conversation.id]
            seeded = 2 if conversation.customer_id == (await _first_customer(session)) else 0
            assert conversation.last_seq == seeded + len(rows)
            assert [m.seq for m in rows] == list(range(seeded + 1, conversation.last_seq + 1))
    return messages


async def _first_customer(session) -> int:
    return (await session.execute(select(Customer.id).order_by(Customer.id).limit(1))).scalar_one()


async def test_one_refusal_in_a_group_is_undone_and_the_others_are_sent(sessions, senders, fake_api) -> None:
    ids = await _group_of_three(sessions)
    fake_api.send_errors = [45015]  # whichever call arrives first is refused
    stats = await dispatch(sessions, senders, FakeClock(T0))
    assert (stats.claimed, stats.sent, stats.skipped) == (3, 2, 1)
    messages = await _books_balance(sessions)
    async with sessions() as session:
        touches = {t.customer_id: t for t in (await session.execute(select(Touch))).scalars()}
        customers = {c.id: c for c in (await session.execute(select(Customer))).scalars()}
    refused = next(i for i in ids if touches[i].status == "skipped")
    assert touches[refused].reason == "window_closed (45015)" and touches[refused].sent_at is None
    assert (customers[refused].window_expires_at, customers[refused].window_used) == (None, 0)
    assert sorted(m.customer_id for m in messages) == sorted(i for i in ids if i != refused)
    for customer_id in ids:
        if customer_id != refused:
            assert (touches[customer_id].status, customers[customer_id].window_used) == ("sent", 1)
    assert len(fake_api.sent) == 2


async def test_a_failed_call_in_a_group_is_retried_with_the_window_count_restored(sessions, senders,
                                                                                 fake_api) -> None:
    ids = await _group_of_three(sessions)
    fake_api.send_statuses = [502]
    clock = FakeClock(T0)
    stats = await dispatch(sessions, senders, clock)
    assert (stats.sent, stats.retried) == (2, 1)
    await _books_balance(sessions)
    async with sessions() as session:
        retried = (await session.execute(select(Touch).where(Touch.status == "pending"))).scalar_one()
        customer = await session.get(Customer, retried.customer_id)
    assert (retried.attempts, retried.due_at, retried.sent_at) == (1, T0 + timedelta(seconds=10), None)
    assert customer is not None and customer.window_used == 0
    clock.advance(seconds=10)
    assert (await dispatch(sessions, senders, clock)).sent == 1
    messages = await _books_balance(sessions)
    assert sorted(m.customer_id for m in messages) == sorted(ids) and len(fake_api.sent) == 3


async def test_a_customers_touches_go_in_priority_order_between_other_customers(sessions, senders,
                                                                                fake_api) -> None:
    alice = await add_customer(sessions, **OPEN)
    others = [await add_customer(sessions, f"o-{n}", **OPEN) for n in range(5)]
    for n in range(3):
        await enqueue(sessions, alice, f"a{n}", body={"type": "text", "text": f"a{n}"}, priority=n)
    for customer_id in others:
        await enqueue(sessions, customer_id, f"o{customer_id}", priority=1)
    settings = TouchPolicySettings(concurrency=4)
    stats = await dispatch(sessions, senders, FakeClock(T0), settings)
    assert stats.sent == 8
    to_alice = [p["text"]["content"] for p in fake_api.sent if p["touser"] == "o-alice"]
    assert to_alice == ["a2", "a1", "a0"]
    async with sessions() as session:
        seqs = [(m.seq, m.text) for m in (await session.execute(
            select(Message).where(Message.customer_id == alice).order_by(Message.seq))).scalars()]
    assert seqs == [(1, "a2"), (2, "a1"), (3, "a0")]
