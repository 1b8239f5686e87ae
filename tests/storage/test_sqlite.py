"""SQLite: a committed message survives the process dying, no statement runs on the event loop,
and reads and other writers go on beside the message path."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.clock import SystemClock
from bot.pipeline.pipeline import Pipeline
from handlers.messages import Inbound, InboundKind
from handlers.router import ReplyTexts, Router
from storage.db import make_engine, make_read_sessionmaker, make_sessionmaker
from storage.models import Customer, Message
from tests.support.db import messages

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ReplyTexts(fallback="收到", welcome="欢迎", media="收到图片", welcome_by_source={})


def inbound(user: str, dedup: str) -> Inbound:
    return Inbound(channel="wechat_mp", user_id=user, kind=InboundKind.TEXT, received_at=datetime.now(UTC),
                   dedup_key=dedup, text="你好", payload={})


def pipeline_on(url: str) -> tuple[Pipeline, AsyncEngine]:
    engine = make_engine(url)
    return Pipeline(make_sessionmaker(engine), Router([], TEXTS), SystemClock()), engine


async def test_a_message_answered_is_still_stored_after_the_process_is_killed(sqlite_url):
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from datetime import UTC, datetime
        from bot.clock import SystemClock
        from bot.pipeline.pipeline import Pipeline
        from handlers.messages import Inbound, InboundKind
        from handlers.router import ReplyTexts, Router
        from storage.db import make_engine, make_sessionmaker

        async def main():
            engine = make_engine({sqlite_url!r})
            pipeline = Pipeline(make_sessionmaker(engine), Router([], ReplyTexts("收到", "欢迎", "图片", {{}})),
                                SystemClock())
            for n in range(3):
                outcome = await pipeline.handle(Inbound(
                    channel="wechat_mp", user_id="o-amy", kind=InboundKind.TEXT, received_at=datetime.now(UTC),
                    dedup_key=f"msg:{{n}}", text="你好", payload={{}}))
                print(outcome.replies[0].text, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no clean shut-down: nothing closed, nothing checkpointed

        asyncio.run(main())
    """)
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], cwd=ROOT,
                                   capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["收到"] * 3, done.stderr
    stored = await messages(sqlite_url, "o-amy")
    assert [(m.direction, m.text) for m in stored] == [("in", "你好"), ("out", "收到")] * 3


async def test_no_sqlite_statement_runs_on_the_event_loop_thread(sqlite_url):
    threads: set[str] = set()
    statements: list[str] = []

    def record(statement: str) -> None:
        threads.add(threading.current_thread().name)
        statements.append(statement)

    pipeline, engine = pipeline_on(sqlite_url)

    @event.listens_for(engine.sync_engine, "connect")
    def trace(dbapi_connection, _record):
        # The documented way to reach the driver's own (awaitable) calls from a connection event.
        dbapi_connection.run_async(lambda driver: driver.set_trace_callback(record))

    try:
        await asyncio.gather(*(pipeline.handle(inbound(f"o-{n}", f"msg:{n}")) for n in range(10)))
        async with make_read_sessionmaker(engine)() as session:
            assert len((await session.execute(select(Message))).scalars().all()) == 20
    finally:
        await engine.dispose()
    assert any(s.startswith("INSERT INTO messages") for s in statements)
    assert threads and threading.main_thread().name not in threads


async def test_reads_go_on_and_writers_wait_while_another_transaction_writes(sqlite_url):
    """A transaction holding the write lock (a sweep's batch, say) neither blocks a reader nor
    makes another writer fail: the writer waits and then commits."""
    engine = make_engine(sqlite_url)
    other = make_engine(sqlite_url)  # another process on the same file
    reads = make_read_sessionmaker(engine)
    pipeline = Pipeline(make_sessionmaker(engine), Router([], TEXTS), SystemClock())
    try:
        await pipeline.handle(inbound("o-amy", "msg:0"))
        async with other.begin() as holding:
            await holding.execute(text("UPDATE customers SET nickname = 'Amy'"))
            async with reads() as session:
                found = await asyncio.wait_for(session.execute(select(Customer.external_id)), 5)
                assert found.scalars().all() == ["o-amy"]
            waiting = asyncio.ensure_future(pipeline.handle(inbound("o-bob", "msg:1")))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # queued on the write lock, not failed
        assert (await asyncio.wait_for(waiting, 10)).replies
    finally:
        await engine.dispose()
        await other.dispose()
    assert len(await messages(sqlite_url)) == 4
