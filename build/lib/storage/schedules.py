"""When each flow's crontab trigger last fired: one row per trigger, claimed by a conditional UPDATE
so that of several processes exactly one fires a given time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import FlowSchedule
from storage.upsert import insert_ignore


async def schedule_mark(sessions: async_sessionmaker[AsyncSession], key: str, crontab: str,
                        now: datetime) -> datetime:
    """When the schedule last fired. A schedule seen for the first time, or whose crontab was
    edited, starts at `now`: times before it was (re)defined never fire."""
    async with sessions() as session, session.begin():
        dialect = session.get_bind().dialect.name
        await session.execute(insert_ignore(dialect, FlowSchedule, {
            "key": key, "crontab": crontab, "last_fired_at": now, "updated_at": now}))
    async with sessions() as session, session.begin():
        await session.execute(
            update(FlowSchedule).where(FlowSchedule.key == key, FlowSchedule.crontab != crontab)
            .values(crontab=crontab, last_fired_at=now, updated_at=now)
            .execution_options(synchronize_session=False))
    async with sessions() as session:
        row = await session.get(FlowSchedule, key)
        assert row is not None
        return row.last_fired_at


async def claim_firing(sessions: async_sessionmaker[AsyncSession], key: str, crontab: str,
                       fired: datetime, now: datetime) -> bool:
    """Move the schedule's mark to `fired`; True for the one caller that moved it."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(FlowSchedule)
            .where(FlowSchedule.key == key, FlowSchedule.crontab == crontab, FlowSchedule.last_fired_at < fired)
            .values(last_fired_at=fired, updated_at=now)
            .execution_options(synchronize_session=False))
        return bool(result.rowcount)  # type: ignore[attr-defined]
