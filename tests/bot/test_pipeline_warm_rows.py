"""The SQLite writer keeps its customers and conversations between groups, never past a change
made anywhere else."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from bot.app.services import build_flow_engine, build_stages
from bot.app.understanding import build_router
from bot.clock import SystemClock
from bot.pipeline.pipeline import Pipeline
from handlers.messages import Inbound, InboundKind
from storage.db import make_engine, make_sessionmaker
from storage.models import Conversation, FlowRun
from tests.support.db import customer_row, messages
from tests.support.stages import Exploding


def text(user: str, words: str, dedup: str) -> Inbound:
    return Inbound(channel="wechat_mp", user_id=user, kind=InboundKind.TEXT, received_at=datetime.now(UTC),
                   dedup_key=dedup, text=words, payload={"Content": words})


def production_pipeline(sessions, settings) -> Pipeline:
    return Pipeline(sessions, build_router(settings), SystemClock(),
                    stages=build_stages(settings, build_flow_engine(settings, sessions)))


async def hand_to_staff(sessions) -> None:
    """Staff take the (only) chat, as the console does."""
    async with sessions() as session, session.begin():
        await session.execute(update(Conversation).values(state="staff"))


async def test_a_chat_taken_over_in_this_process_silences_the_bot_at_once(sqlite_url, example_settings):
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    pipeline = production_pipeline(sessions, example_settings)
    try:
        for n in (1, 2):  # a first contact, then a customer the writer has loaded and kept
            assert (await pipeline.handle(text("o-a", "几点开门", f"msg:{n}"))).replies
        await hand_to_staff(sessions)  # another session of this process, on its one connection
        assert (await pipeline.handle(text("o-a", "几点开门", "msg:3"))).replies == []
    finally:
        await engine.dispose()


async def test_a_chat_taken_over_by_another_process_silences_the_bot_at_once(sqlite_url, example_settings):
    engine, other = make_engine(sqlite_url), make_engine(sqlite_url)
    pipeline = production_pipeline(make_sessionmaker(engine), example_settings)
    try:
        for n in (1, 2):
            assert (await pipeline.handle(text("o-a", "几点开门", f"msg:{n}"))).replies
        await hand_to_staff(make_sessionmaker(other))  # another process on the same file
        assert (await pipeline.handle(text("o-a", "几点开门", "msg:3"))).replies == []
    finally:
        await engine.dispose()
        await other.dispose()


async def test_after_a_failed_group_the_conversation_continues_from_what_was_stored(sqlite_url, example_settings):
    """A failed group had already counted its messages on the customer's conversation; none of
    that was stored, so the next message must not continue from it."""
    engine = make_engine(sqlite_url)
    pipeline = Pipeline(make_sessionmaker(engine), build_router(example_settings), SystemClock(), stages=[Exploding()])
    try:
        await pipeline.handle(text("o-a", "几点开门", "msg:0"))
        await pipeline.handle(text("o-a", "几点开门", "msg:1"))
        results = await asyncio.gather(pipeline.handle(text("o-a", "几点开门", "msg:2")),
                                       pipeline.handle(text("o-a", "boom", "msg:3")),
                                       pipeline.handle(text("o-b", "几点开门", "msg:4")),
                                       return_exceptions=True)
        assert isinstance(results[1], RuntimeError) and pipeline.stats.batch_fallbacks == 1
        await pipeline.handle(text("o-a", "几点开门", "msg:5"))
    finally:
        await engine.dispose()
    stored = await messages(sqlite_url, "o-a")
    assert [m.platform_msg_id for m in stored if m.direction == "in"] == ["msg:0", "msg:1", "msg:2", "msg:5"]
    assert [m.seq for m in stored] == list(range(1, 9))


async def test_a_question_a_flow_asked_from_elsewhere_takes_the_customers_next_message(sqlite_url, example_settings):
    """The writer also remembers which customers had no open flow run; a run started by another
    part of the service (a business event, a schedule) must reach the very next message."""
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    pipeline = production_pipeline(sessions, example_settings)
    survey = next(flow for flow in example_settings.flows if flow.name == "after_sales_survey")
    try:
        for n in (1, 2):
            assert (await pipeline.handle(text("o-a", "几点开门", f"msg:{n}"))).replies
        customer = await customer_row(sqlite_url, "o-a")
        now = datetime.now(UTC)
        async with sessions() as session, session.begin():
            session.add(FlowRun(customer_id=customer.id, flow=survey.name, version=survey.version(), status="asking",
                                step="csat", wake_at=now + timedelta(days=2), variables={}, trigger="test",
                                started_at=now, updated_at=now))
        answer = await pipeline.handle(text("o-a", "5", "msg:3"))
    finally:
        await engine.dispose()
    assert [reply.text for reply in answer.replies] == ["谢谢您的评分！您有多大可能把我们推荐给朋友？请回复 0-10。"]


async def test_a_new_customers_rows_are_kept_from_their_first_message(sqlite_url, example_settings):
    """Every column of a new customer and conversation is known once stored, so the writer keeps
    them for the customer's next message instead of loading them again."""
    engine = make_engine(sqlite_url)
    pipeline = production_pipeline(make_sessionmaker(engine), example_settings)
    try:
        await asyncio.gather(*(pipeline.handle(text(f"o-{n}", "几点开门", f"msg:{n}")) for n in range(3)))
        assert len(pipeline._warm) == 3
        assert (await pipeline.handle(text("o-1", "几点开门", "msg:again"))).replies
    finally:
        await engine.dispose()
