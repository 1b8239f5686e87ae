"""Open runs answered for a whole group of customers at once, and never stale within it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import event

from flows import runs
from storage.conversations import new_customer
from storage.db import make_engine, make_sessionmaker
from storage.models import FlowRun

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def run_of(customer_id: int, status: str = "waiting") -> FlowRun:
    return FlowRun(customer_id=customer_id, flow="care", version="v1", status=status, step="s1", attempts=0,
                   variables={}, trigger="test", started_at=NOW, updated_at=NOW)


async def test_customers_noted_without_runs_are_answered_without_a_query_until_a_run_is_added(sqlite_url):
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    selects: list[str] = []

    @event.listens_for(engine.sync_engine, "connect")
    def trace(dbapi_connection, _record):
        # SQLite's own trace sees every statement, also those the group writer runs directly.
        dbapi_connection.driver_connection.sqlite.set_trace_callback(
            lambda statement: selects.append(statement)
            if statement.lstrip().startswith("SELECT") and "flow_runs" in statement else None)
    try:
        async with sessions() as session, session.begin():
            alice, bob = new_customer("wechat_mp", "o-alice", NOW), new_customer("wechat_mp", "o-bob", NOW)
            session.add_all([alice, bob])
            await session.flush()
            session.add(run_of(bob.id))
        async with sessions() as session, session.begin():
            await runs.note_customers_without_open_runs(session, [alice.id, bob.id])
            assert len(selects) == 1
            assert await runs.open_runs(session, alice.id) == []
            assert len(selects) == 1  # answered from the note
            assert [r.customer_id for r in await runs.open_runs(session, bob.id)] == [bob.id]
            started = run_of(alice.id, "active")
            session.add(started)  # a flow starts for alice in this same transaction
            assert await runs.open_runs(session, alice.id) == [started]
        async with sessions() as session, session.begin():
            # A later transaction of the same session factory knows nothing from before.
            before = len(selects)
            assert len(await runs.open_runs(session, alice.id)) == 1 and len(selects) == before + 1
    finally:
        await engine.dispose()
