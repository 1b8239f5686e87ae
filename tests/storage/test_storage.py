"""The storage suite: the same behaviour on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bot.app.understanding import build_router
from bot.clock import SystemClock
from bot.config.settings import Settings
from bot.pipeline.pipeline import Pipeline
from flows.consent import ConsentMiddleware
from handlers.messages import EventKind, Inbound, InboundKind
from storage.db import make_engine, make_sessionmaker
from storage.tokens import refresh_token
from tests.support.db import customer_row, events, messages


def text(user: str, words: str, dedup: str | None = None, channel: str = "wechat_mp") -> Inbound:
    return Inbound(channel=channel, user_id=user, kind=InboundKind.TEXT, received_at=datetime.now(UTC),
                   dedup_key=dedup, text=words, payload={"Content": words, "emoji": "😀"})


async def pipeline_on(url: str, settings: Settings):
    engine = make_engine(url, pool_size=5)
    # Consent and subscription: what a follow or unfollow changes on the customer.
    consent = ConsentMiddleware(settings.touches.unsubscribe_reply, settings.touches.resubscribe_reply)
    return engine, Pipeline(make_sessionmaker(engine), build_router(settings), SystemClock(), middlewares=[consent])


async def test_messages_customers_and_events_round_trip(backend_url, example_settings):
    engine, pipeline = await pipeline_on(backend_url, example_settings)
    try:
        outcome = await pipeline.handle(text("o-1", "请问几点开门？😀", dedup="msg:1"))
        assert outcome.replies[0].text.startswith("亲，我们的门店营业时间")
    finally:
        await engine.dispose()
    stored = await messages(backend_url, "o-1")
    assert [(m.direction, m.seq) for m in stored] == [("in", 1), ("out", 2)]
    assert stored[0].text == "请问几点开门？😀" and stored[0].payload["emoji"] == "😀"
    assert stored[0].created_at.tzinfo is not None
    assert abs(stored[0].created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert (await customer_row(backend_url, "o-1")).stage == "contact"
    assert [e.kind for e in await events(backend_url)] == ["first_contact"]


async def test_a_platform_message_is_stored_once(backend_url, example_settings):
    engine, pipeline = await pipeline_on(backend_url, example_settings)
    try:
        first = await pipeline.handle(text("o-2", "几点开门", dedup="msg:42"))
        again = await pipeline.handle(text("o-2", "几点开门", dedup="msg:42"))
    finally:
        await engine.dispose()
    assert not first.duplicate and again.duplicate
    assert [r.text for r in again.replies] == [r.text for r in first.replies]
    assert len(await messages(backend_url, "o-2")) == 2


async def test_same_openid_on_two_channels_is_two_customers(backend_url, example_settings):
    engine, pipeline = await pipeline_on(backend_url, example_settings)
    try:
        await pipeline.handle(text("same-id", "你好", channel="wechat_mp"))
        await pipeline.handle(text("same-id", "你好", channel="simulator"))
    finally:
        await engine.dispose()
    assert len({m.customer_id for m in await messages(backend_url)}) == 2


async def test_two_processes_keep_one_customers_messages_in_order(backend_url, example_settings):
    """Two pipelines with their own engines stand for two processes behind a load balancer."""
    engine_a, first = await pipeline_on(backend_url, example_settings)
    engine_b, second = await pipeline_on(backend_url, example_settings)
    try:
        await first.handle(text("o-3", "你好", dedup="msg:warm"))  # the customer exists
        await asyncio.gather(*(
            (first if i % 2 else second).handle(text("o-3", f"几点开门 {i}", dedup=f"msg:{i}"))
            for i in range(20)
        ))
        # A retry reaching the other process is still recognised.
        retried = await second.handle(text("o-3", "几点开门 1", dedup="msg:1"))
        assert retried.duplicate
    finally:
        await engine_a.dispose()
        await engine_b.dispose()
    stored = await messages(backend_url, "o-3")
    assert [m.seq for m in stored] == list(range(1, 43))
    for question, answer in zip(stored[0::2], stored[1::2], strict=True):
        assert (question.direction, answer.direction) == ("in", "out")
        assert answer.reply_to_id == question.id


async def test_a_new_customer_arriving_at_two_processes_at_once_is_created_once(backend_url, example_settings):
    engine_a, first = await pipeline_on(backend_url, example_settings)
    engine_b, second = await pipeline_on(backend_url, example_settings)
    try:
        await asyncio.gather(first.handle(text("o-4", "你好", dedup="msg:a")),
                             second.handle(text("o-4", "在吗", dedup="msg:b")))
    finally:
        await engine_a.dispose()
        await engine_b.dispose()
    stored = await messages(backend_url, "o-4")
    assert len(stored) == 4 and len({m.customer_id for m in stored}) == 1


async def test_unsubscribe_and_resubscribe_are_logged(backend_url, example_settings):
    engine, pipeline = await pipeline_on(backend_url, example_settings)
    now = datetime.now(UTC)
    try:
        for event in (EventKind.SUBSCRIBE, EventKind.UNSUBSCRIBE, EventKind.SUBSCRIBE):
            await pipeline.handle(Inbound(channel="wechat_mp", user_id="o-5", kind=InboundKind.EVENT,
                                          received_at=now, event=event, event_key="store_qr"))
    finally:
        await engine.dispose()
    assert [e.kind for e in await events(backend_url)] == ["first_contact", "subscribe", "unsubscribe", "subscribe"]
    customer = await customer_row(backend_url, "o-5")
    assert customer.subscribed and customer.source == "store_qr"


async def test_access_token_is_fetched_once_for_all_processes(backend_url):
    engines = [make_engine(backend_url, pool_size=2) for _ in range(3)]
    fetched: list[str] = []

    async def fetch() -> tuple[str, int]:
        await asyncio.sleep(0.05)  # a slow platform makes the race likely
        fetched.append(f"token-{len(fetched) + 1}")
        return fetched[-1], 7200

    now = datetime.now(UTC)
    try:
        rows = await asyncio.gather(*(
            refresh_token(make_sessionmaker(engine), "wechat_mp:wx1", fetch, now, now + timedelta(minutes=10))
            for engine in engines
        ))
        assert fetched == ["token-1"]
        assert {row.token for row in rows} == {"token-1"}
        # A token the platform rejected is replaced even though it has not expired.
        replaced = await refresh_token(make_sessionmaker(engines[0]), "wechat_mp:wx1", fetch, now,
                                       now + timedelta(minutes=10), stale_token="token-1")
        assert replaced.token == "token-2"
    finally:
        for engine in engines:
            await engine.dispose()
