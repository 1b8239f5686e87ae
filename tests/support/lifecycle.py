"""Helpers for lifecycle, points and business-event tests: a settable clock, recorded reactions,
a database on any backend, customers seeded in bulk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.db import make_engine, make_sessionmaker
from storage.models import Customer

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


@dataclass
class FixedClock:
    at: datetime = NOW

    def now(self) -> datetime:
        return self.at


@dataclass
class RecordingReactions:
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    stages: list[tuple[int, str | None, str]] = field(default_factory=list)

    async def on_event(self, session: AsyncSession, customer: Customer, event_type: str,
                       data: dict[str, Any], now: datetime) -> None:
        self.events.append((customer.id, event_type, data))

    async def on_stage_change(self, session: AsyncSession, customer: Customer, from_stage: str | None,
                              to_stage: str, now: datetime) -> None:
        assert customer.stage == to_stage
        self.stages.append((customer.id, from_stage, to_stage))


@dataclass
class Database:
    sessions: async_sessionmaker[AsyncSession]
    statements: list[str] = field(default_factory=list)


@asynccontextmanager
async def database(url: str) -> AsyncIterator[Database]:
    """An engine on `url` that counts the statements it sends."""
    engine = make_engine(url, pool_size=3)
    db = Database(make_sessionmaker(engine))

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        db.statements.append(statement)

    try:
        yield db
    finally:
        await engine.dispose()


async def add_customers(sessions: async_sessionmaker[AsyncSession], rows: list[dict[str, Any]]) -> list[int]:
    """Insert customers in bulk (one statement per 1,000); returns their ids in order."""
    defaults = {"channel": "wechat_mp", "stage": "contact", "subscribed": True, "created_at": NOW,
                "tags": [], "attributes": {}, "timezone": "Asia/Shanghai", "points_balance": 0,
                "orders_count": 0, "lifetime_spend": 0, "marketing_opt_out": False, "window_quota": 0,
                "window_used": 0}
    async with sessions() as session, session.begin():
        for start in range(0, len(rows), 1000):
            await session.execute(insert(Customer), [{**defaults, **row} for row in rows[start:start + 1000]])
    async with sessions() as session:
        from sqlalchemy import select

        wanted = [(row.get("channel", "wechat_mp"), row["external_id"]) for row in rows]
        found = {(channel, external_id): id_ for channel, external_id, id_ in (await session.execute(
            select(Customer.channel, Customer.external_id, Customer.id)
            .where(Customer.external_id.in_([external_id for _, external_id in wanted])))).all()}
    return [found[key] for key in wanted]
