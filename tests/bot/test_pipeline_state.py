"""Every message sees the customer's state as it is stored now: a takeover, a flow's question or
a failed message elsewhere reaches the very next message, on every database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from bot.app.services import build_flow_engine, build_middlewares
from bot.app.understanding import build_router
from bot.clock import SystemClock
from bot.pipeline.pipeline import Pipeline
from handlers.messages import Inbound, InboundKind
from storage.db import is_sqlite, make_engine, make_sessionmaker
from storage.models import Conversation, FlowRun
from tests.support.db import customer_row, messages, rows
from tests.support.stages import Exploding


def text(user: str, words: str, dedup: str) -> Inbound:
    return Inbound(channel="wechat_mp", user_id=user, kind=InboundKind.TEXT, received_at=datetime.now(UTC),
                   dedup_key=dedup, text=words, payload={"Content": words})


def production_pipeline(sessions, settings) -> Pipeline:
    return Pipeline(sessions, build_router(settings), SystemClock(),
                    middlewares=build_middlewares(settings, build_flow_engine(settings, sessions)))


async def hand_to_staff(sessions) -> None:
    """Staff take the (only) chat, as the console does."""
    async with sessions() as session, session.begin():
        await session.execute(update(Conversation).values(state="staff"))


async def test_a_chat_taken_over_in_this_process_silences_the_bot_at_once(backend_url, example_settings):
    engine = make_engine(backend_url)
    sessions = make_sessionmaker(engine)
    pipeline = production_pipeline(sessions, example_settings)
    try:
        for n in (1, 2):  # a first contact, then a customer already stored
            assert (await pipeline.handle(text("o-a", "几点开门", f"msg:{n}"))).replies
        await hand_to_staff(sessions)  # another session of this process
        assert (await pipeline.handle(text("o-a", "几点开门", "msg:3"))).replies == []
    finally:
        await engine.dispose()


async def test_a_chat_taken_over_by_another_process_silences_the_bot_at_once(backend_url, example_settings):
    engine, other = make_engine(backend_url), make_engine(backend_url)
    pipeline = production_pipeline(make_sessionmaker(engine), example_settings)
    try:
        for n in (1, 2):
            assert (await pipeline.handle(text("o-a", "几点开门", f"msg:{n}"))).replies
        await hand_to_staff(make_sessionmaker(other))  # another process on the same database
        assert (await pipeline.handle(text("o-a", "几点开门", "msg:3"))).replies == []
    finally:
        await engine.dispose()
        await other.dispose()


async def test_after_a_failed_group_the_conversation_continues_from_what_was_stored(backend_url, example_settings):
    """On SQLite a failed group had already counted its messages on the customer's conversation;
    none of that was stored, so the next message must not continue from it."""
    engine = make_engine(backend_url)
    pipeline = Pipeline(make_sessionmaker(engine), build_router(example_settings), SystemClock(),
                        middlewares=[Exploding()])
    try:
        await pipeline.handle(text("o-a", "几点开门", "msg:0"))
        await pipeline.handle(text("o-a", "几点开门", "msg:1"))
        results = await asyncio.gather(pipeline.handle(text("o-a", "几点开门", "msg:2")),
                                       pipeline.handle(text("o-c", "boom", "msg:3")),
                                       pipeline.handle(text("o-b", "几点开门", "msg:4")),
                                       return_exceptions=True)
        assert isinstance(results[1], RuntimeError)
        if is_sqlite(backend_url):
            assert pipeline.stats.batch_fallbacks == 1
        await pipeline.handle(text("o-a", "几点开门", "msg:5"))
    finally:
        await engine.dispose()
    stored = await messages(backend_url, "o-a")
    assert [m.platform_msg_id for m in stored if m.direction == "in"] == ["msg:0", "msg:1", "msg:2", "msg:5"]
    assert [m.seq for m in stored] == list(range(1, 9))


async def test_a_question_a_flow_asked_from_elsewhere_takes_the_customers_next_message(backend_url, example_settings):
    """A run started by another part of the service (a business event, a schedule) reaches the
    very next message of a customer the pipeline has seen before."""
    engine = make_engine(backend_url)
    sessions = make_sessionmaker(engine)
    pipeline = production_pipeline(sessions, example_settings)
    survey = next(flow for flow in example_settings.flows if flow.name == "after_sales_survey")
    try:
        for n in (1, 2):
            assert (await pipeline.handle(text("o-a", "几点开门", f"msg:{n}"))).replies
        customer = await customer_row(backend_url, "o-a")
        now = datetime.now(UTC)
        async with sessions() as session, session.begin():
            session.add(FlowRun(customer_id=customer.id, flow=survey.name, version=survey.version(), status="asking",
                                step="csat", wake_at=now + timedelta(days=2), variables={}, trigger="test",
                                started_at=now, updated_at=now))
        answer = await pipeline.handle(text("o-a", "5", "msg:3"))
    finally:
        await engine.dispose()
    assert [reply.text for reply in answer.replies] == ["谢谢您的评分！您有多大可能把我们推荐给朋友？请回复 0-10。"]


async def test_a_new_customers_second_message_continues_their_first_conversation(backend_url, example_settings):
    """First contacts stored together; each customer's next message goes on in the conversation
    their first one started, numbered after it."""
    engine = make_engine(backend_url)
    pipeline = production_pipeline(make_sessionmaker(engine), example_settings)
    try:
        await asyncio.gather(*(pipeline.handle(text(f"o-{n}", "几点开门", f"msg:{n}")) for n in range(3)))
        assert (await pipeline.handle(text("o-1", "几点开门", "msg:again"))).replies
    finally:
        await engine.dispose()
    stored = await messages(backend_url, "o-1")
    assert [m.seq for m in stored] == [1, 2, 3, 4]
    assert len({m.conversation_id for m in stored}) == 1
    assert len(await rows(backend_url, Conversation)) == 3
