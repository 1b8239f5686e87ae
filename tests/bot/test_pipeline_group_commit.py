"""Messages arriving together, on every database: each gets its own answer, one bad message fails
alone, one customer's messages keep their order. On SQLite they share one transaction (group
commit); the tests of that commit delay itself run on SQLite only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from bot.app.services import build_flow_engine, build_middlewares
from bot.app.understanding import build_router
from bot.clock import SystemClock
from bot.console.takeover import HandoffMiddleware
from bot.pipeline.pipeline import Pipeline, PipelineOverloaded
from handlers.messages import Inbound, InboundKind
from storage.db import is_sqlite, make_engine, make_sessionmaker
from storage.models import Conversation, Customer, Message, StageChange
from storage.turns import GATHER_TARGET
from tests.support.db import events, messages, rows
from tests.support.stages import Exploding


def text(user: str, words: str, dedup: str) -> Inbound:
    return Inbound(channel="wechat_mp", user_id=user, kind=InboundKind.TEXT, received_at=datetime.now(UTC),
                   dedup_key=dedup, text=words, payload={"Content": words})


@pytest.fixture
async def pipeline(backend_url, example_settings):
    engine = make_engine(backend_url)
    yield Pipeline(make_sessionmaker(engine), build_router(example_settings), SystemClock(), middlewares=[Exploding()])
    await engine.dispose()


@pytest.fixture
async def sqlite_pipeline(sqlite_url, example_settings):
    engine = make_engine(sqlite_url)
    yield Pipeline(make_sessionmaker(engine), build_router(example_settings), SystemClock(), middlewares=[Exploding()])
    await engine.dispose()


def grouped(url: str) -> bool:
    """Whether the messages of a test share transactions (SQLite's group commit)."""
    return is_sqlite(url)


async def test_messages_arriving_together_are_committed_together(pipeline, backend_url):
    outcomes = await asyncio.gather(*(pipeline.handle(text(f"o-{i}", "几点开门", f"msg:{i}")) for i in range(30)))
    assert all(o.replies[0].text.startswith("亲，我们的门店营业时间") and not o.duplicate for o in outcomes)
    assert pipeline.stats.handled == 30
    if grouped(backend_url):
        assert pipeline.stats.batches < 30
    stored = await messages(backend_url)
    assert len(stored) == 60
    # Each caller gets the ids of its own stored replies.
    by_id = {m.id: m for m in stored}
    for i, outcome in enumerate(outcomes):
        answer = by_id[outcome.message_ids[0]]
        question = by_id[answer.reply_to_id]
        assert question.platform_msg_id == f"msg:{i}" and answer.direction == "out"


async def test_a_retry_in_a_group_is_answered_from_storage_and_the_others_still_stored(pipeline, backend_url):
    first = await pipeline.handle(text("o-dup", "几点开门", "msg:dup"))
    inbounds = [text(f"o-{i}", "几点开门", f"msg:{i}") for i in range(10)]
    inbounds.insert(5, text("o-dup", "几点开门", "msg:dup"))
    outcomes = await asyncio.gather(*(pipeline.handle(inbound) for inbound in inbounds))
    retried = outcomes.pop(5)
    assert retried.duplicate and [r.text for r in retried.replies] == [r.text for r in first.replies]
    assert retried.message_ids == first.message_ids
    assert not any(o.duplicate for o in outcomes) and all(o.replies for o in outcomes)
    if grouped(backend_url):
        assert pipeline.stats.batch_fallbacks >= 1
    assert len(await messages(backend_url)) == 2 + 20
    assert len(await messages(backend_url, "o-dup")) == 2


async def test_a_failing_message_fails_alone(pipeline, backend_url):
    inbounds = [text(f"o-{i}", "boom" if i == 3 else "几点开门", f"msg:{i}") for i in range(8)]
    results = await asyncio.gather(*(pipeline.handle(inbound) for inbound in inbounds), return_exceptions=True)
    assert isinstance(results[3], RuntimeError)
    assert all(not isinstance(r, BaseException) and r.replies for i, r in enumerate(results) if i != 3)
    assert await messages(backend_url, "o-3") == []
    assert len(await messages(backend_url)) == 14


async def test_one_customers_messages_keep_their_order_across_groups(pipeline, backend_url):
    inbounds = []
    for i in range(20):
        inbounds.append(text("o-same", f"几点开门 {i}", f"msg:same:{i}"))
        inbounds.append(text(f"o-{i}", "几点开门", f"msg:other:{i}"))
    await asyncio.gather(*(pipeline.handle(inbound) for inbound in inbounds))
    stored = await messages(backend_url, "o-same")
    assert [m.seq for m in stored] == list(range(1, 41))
    assert [m.text for m in stored[0::2]] == [f"几点开门 {i}" for i in range(20)]
    for question, answer in zip(stored[0::2], stored[1::2], strict=True):
        assert answer.reply_to_id == question.id


async def test_beyond_the_in_flight_cap_messages_are_refused_at_once(backend_url, example_settings):
    engine = make_engine(backend_url)
    pipeline = Pipeline(make_sessionmaker(engine), build_router(example_settings), SystemClock(), max_in_flight=5)
    try:
        results = await asyncio.gather(*(pipeline.handle(text(f"o-{i}", "几点开门", f"msg:{i}")) for i in range(8)),
                                       return_exceptions=True)
        again = await pipeline.handle(text("o-later", "几点开门", "msg:later"))  # the backlog cleared
    finally:
        await engine.dispose()
    assert [isinstance(r, PipelineOverloaded) for r in results] == [False] * 5 + [True] * 3
    assert again.replies and pipeline.stats.overloaded == 3
    assert len(await messages(backend_url)) == 2 * 6


async def test_a_stage_that_flushes_inside_a_group_keeps_every_row(backend_url, example_settings):
    """Escalation flushes mid-group; the messages after it still get their own ids and answers."""
    engine = make_engine(backend_url)
    pipeline = Pipeline(make_sessionmaker(engine), build_router(example_settings), SystemClock(),
                        middlewares=[HandoffMiddleware(example_settings.staff)])
    try:
        inbounds = [text(f"o-{i}", "转人工" if i == 2 else "几点开门", f"msg:{i}") for i in range(6)]
        outcomes = await asyncio.gather(*(pipeline.handle(inbound) for inbound in inbounds))
    finally:
        await engine.dispose()
    assert pipeline.stats.batch_fallbacks == 0
    assert outcomes[2].replies[-1].intent == "handoff"
    stored = await messages(backend_url)
    expected = 6 + sum(len(o.replies) for o in outcomes)
    assert len(stored) == expected and len({m.id for m in stored}) == expected
    assert sorted(i for o in outcomes for i in o.message_ids) == sorted(m.id for m in stored if m.direction == "out")


async def test_new_customers_arriving_together_are_stored_in_one_group_with_every_stage(backend_url, example_settings):
    """First contacts through the production middlewares: each its own rows, no fallback."""
    engine = make_engine(backend_url)
    sessions = make_sessionmaker(engine)
    flows = build_flow_engine(example_settings, sessions)
    pipeline = Pipeline(sessions, build_router(example_settings), SystemClock(),
                        middlewares=build_middlewares(example_settings, flows))
    try:
        await pipeline.handle(text("o-known", "几点开门", "msg:known"))
        inbounds = [text(f"o-{i}", "几点开门", f"msg:{i}") for i in range(20)]
        inbounds.insert(7, text("o-known", "几点开门", "msg:known:2"))
        outcomes = await asyncio.gather(*(pipeline.handle(inbound) for inbound in inbounds))
    finally:
        await engine.dispose()
    assert pipeline.stats.batch_fallbacks == 0
    if grouped(backend_url):
        assert pipeline.stats.batches < 21
    assert all(o.replies and not o.duplicate for o in outcomes)
    customers = await rows(backend_url, Customer)
    assert len(customers) == 21 and len({c.id for c in customers}) == 21
    conversations = {c.customer_id: c for c in await rows(backend_url, Conversation)}
    for customer in customers:
        stored = await messages(backend_url, customer.external_id)
        assert all(m.conversation_id == conversations[customer.id].id for m in stored)
        assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
        assert conversations[customer.id].last_seq == len(stored)
    assert len(await messages(backend_url, "o-known")) == 4
    assert len(await events(backend_url, "first_contact")) == 21
    assert sorted(s.customer_id for s in await rows(backend_url, StageChange)) == sorted(c.id for c in customers)


async def test_started_messages_settle_after_their_after_commit_work_and_in_order(backend_url, example_settings):
    """The callback's way in (start, no wait required): an escalation's console notice runs before
    its outcome is settled, the customer's next message waits for it, and a failure reaches the
    waiting caller without holding the customer."""
    engine = make_engine(backend_url)
    notices: list[str] = []

    async def notify() -> None:
        await asyncio.sleep(0.01)
        notices.append("notified")

    pipeline = Pipeline(make_sessionmaker(engine), build_router(example_settings), SystemClock(),
                        middlewares=[Exploding(), HandoffMiddleware(example_settings.staff, notify)])
    try:
        escalated = pipeline.start(text("o-amy", "转人工", "msg:1"))
        following = pipeline.start(text("o-amy", "几点开门", "msg:2"))
        failing = pipeline.start(text("o-bob", "boom", "msg:3"))
        bob_again = pipeline.start(text("o-bob", "几点开门", "msg:4"))
        first = await escalated
        assert notices == ["notified"] and first.replies[-1].intent == "handoff"
        await following
        with pytest.raises(RuntimeError, match="stage failed"):
            await failing
        assert (await bob_again).replies
    finally:
        await engine.dispose()
    amy = await messages(backend_url, "o-amy")
    assert [m.platform_msg_id for m in amy if m.direction == "in"] == ["msg:1", "msg:2"]
    assert len(pipeline._locks) == 0 and pipeline._in_flight == 0


async def test_a_busy_writer_waits_for_a_small_group_to_grow_and_no_longer_once_it_has(sqlite_pipeline, monkeypatch):
    """While busy, a group smaller than the target waits up to the commit delay for more; it is
    stored as soon as the target is queued, without waiting the delay out."""
    pipeline = sqlite_pipeline
    # A delay long beside storing a group of eight new customers, even on a busy machine.
    monkeypatch.setattr("storage.turns.GATHER_SECONDS", 1.0)
    loop = asyncio.get_running_loop()
    started: dict[str, list[asyncio.Future]] = {}

    def then_start(name: str, count: int) -> Callable[[object], None]:
        # Queued as the group before commits: the writer, busy, finds them waiting.
        return lambda _: started.setdefault(name, [
            pipeline.start(text(f"o-{name}{i}", "几点开门", f"msg:{name}{i}")) for i in range(count)])

    first = [pipeline.start(text(f"o-a{i}", "几点开门", f"msg:a{i}")) for i in range(3)]
    first[-1].add_done_callback(then_start("b", 2))
    await asyncio.gather(*first)
    began = loop.time()
    await asyncio.sleep(0.01)
    started["b"][-1].add_done_callback(then_start("c", 2))
    await asyncio.gather(*started["b"])
    assert loop.time() - began >= 0.25  # two are fewer than the target: they waited for more

    await asyncio.sleep(0.05)  # the next two wait for their group to grow
    batches = pipeline.stats.batches
    began = loop.time()
    rest = [pipeline.start(text(f"o-d{i}", "几点开门", f"msg:d{i}")) for i in range(GATHER_TARGET - 2)]
    await asyncio.gather(*started["c"], *rest)
    assert loop.time() - began < 0.7  # stored once the target was queued, not after the delay
    assert pipeline.stats.batches == batches + 1


async def test_times_stored_by_a_group_compare_equal_to_the_same_time_in_a_query(pipeline, backend_url):
    """The group writes its rows outside SQLAlchemy's execution: a time on the whole second must
    still be stored as SQLAlchemy stores it, or a query for that exact time finds nothing."""
    on_the_second = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    inbound = Inbound(channel="wechat_mp", user_id="o-amy", kind=InboundKind.TEXT, received_at=on_the_second,
                      dedup_key="msg:on-the-second", text="几点开门", payload={})
    await asyncio.gather(pipeline.handle(inbound), pipeline.handle(text("o-bob", "几点开门", "msg:bob")))
    if grouped(backend_url):
        assert pipeline.stats.batches == 1
    found = await rows(backend_url, Message, Message.created_at == on_the_second)
    assert [m.platform_msg_id for m in found] == ["msg:on-the-second"]


async def test_one_instant_in_any_zone_is_stored_as_the_same_utc_time(pipeline, backend_url):
    """The group writer binds times as SQLite's UTC text itself: a time given in China's zone and
    the same instant in UTC are stored alike, and a microsecond later is not."""
    instant = datetime(2026, 3, 1, 9, 30, 15, 250, tzinfo=UTC)
    in_beijing = instant.astimezone(timezone(timedelta(hours=8)))
    later = instant + timedelta(microseconds=1)

    def at(user: str, received_at: datetime) -> Inbound:
        return Inbound(channel="wechat_mp", user_id=user, kind=InboundKind.TEXT, received_at=received_at,
                       dedup_key=f"msg:{user}", text="几点开门", payload={})

    await asyncio.gather(pipeline.handle(at("o-amy", in_beijing)), pipeline.handle(at("o-bob", instant)),
                         pipeline.handle(at("o-cai", later)))
    if grouped(backend_url):
        assert pipeline.stats.batches == 1
    found = await rows(backend_url, Message, Message.created_at == instant)
    assert sorted(m.platform_msg_id for m in found) == ["msg:o-amy", "msg:o-bob"]
    assert [m.created_at for m in found] == [instant, instant]


async def test_while_the_writer_is_busy_other_sessions_still_get_the_connection(sqlite_url, example_settings):
    """The writer keeps the pool's one connection across a few groups while messages keep
    coming; a console or sweeper session waits for at most that many, and once the messages stop
    the connection is back in the pool."""
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    pipeline = Pipeline(sessions, build_router(example_settings), SystemClock())
    flowing = True
    started: list[asyncio.Future] = []

    async def keep_busy() -> None:
        # Always more waiting than one group takes, never more than a few groups' worth.
        pending: set[asyncio.Future] = set()
        n = 0
        while flowing:
            batch = [pipeline.start(text(f"o-{i % 300}", "几点开门", f"msg:{i}")) for i in range(n, n + 8)]
            n += 8
            started.extend(batch)
            pending.update(batch)
            if len(pending) > 96:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(0)

    producer = asyncio.create_task(keep_busy())
    try:
        while pipeline.stats.batches < 3:
            await asyncio.sleep(0.001)
        before = pipeline.stats.batches

        async def count() -> None:
            async with sessions() as session:
                await session.execute(select(func.count()).select_from(Message))

        await asyncio.wait_for(count(), 10)  # starved until the messages stop: a failure
        waited = pipeline.stats.batches - before
        flowing = False
        await producer
        await asyncio.gather(*started)
        await pipeline.close()
        assert engine.pool.checkedout() == 0
    finally:
        flowing = False
        await engine.dispose()
    assert waited <= 9  # the eight groups of one hold, and the one it was in
    assert pipeline.stats.batch_fallbacks == 0 and len(await messages(sqlite_url)) == 2 * len(started)
