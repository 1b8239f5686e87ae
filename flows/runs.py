"""Queries for flow runs and flow versions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Customer, FlowRun, FlowVersion
from storage.upsert import insert_ignore

OPEN = ("active", "waiting", "asking")


async def save_versions(session: AsyncSession, versions: Sequence[tuple[str, str, dict[str, Any]]],
                        now: datetime) -> None:
    dialect = session.get_bind().dialect.name
    for flow, version, definition in versions:
        await session.execute(insert_ignore(dialect, FlowVersion, {
            "flow": flow, "version": version, "definition": definition, "created_at": now}))


async def load_version(session: AsyncSession, flow: str, version: str) -> dict[str, Any] | None:
    row = (await session.execute(
        select(FlowVersion.definition).where(FlowVersion.flow == flow, FlowVersion.version == version)
    )).scalar_one_or_none()
    return row


async def open_runs(session: AsyncSession, customer_id: int) -> list[FlowRun]:
    return list((await session.execute(
        select(FlowRun).where(FlowRun.customer_id == customer_id, FlowRun.status.in_(OPEN))
        .order_by(FlowRun.id)
    )).scalars())


async def last_run(session: AsyncSession, customer_id: int, flow: str) -> FlowRun | None:
    return (await session.execute(
        select(FlowRun).where(FlowRun.customer_id == customer_id, FlowRun.flow == flow)
        .order_by(FlowRun.started_at.desc(), FlowRun.id.desc()).limit(1)
    )).scalar_one_or_none()


async def due_run_ids(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    return list((await session.execute(
        select(FlowRun.id).where(FlowRun.status.in_(("waiting", "asking")), FlowRun.wake_at <= now)
        .order_by(FlowRun.wake_at).limit(limit)
    )).scalars())


async def lock_run(session: AsyncSession, run_id: int) -> tuple[FlowRun, Customer] | None:
    """The run and its customer, customer row locked first (the pipeline's lock order)."""
    customer_id = (await session.execute(select(FlowRun.customer_id).where(FlowRun.id == run_id))).scalar()
    if customer_id is None:
        return None
    customer = (await session.execute(
        select(Customer).where(Customer.id == customer_id).with_for_update())).scalar_one()
    run = (await session.execute(select(FlowRun).where(FlowRun.id == run_id).with_for_update())).scalar_one()
    return run, customer
