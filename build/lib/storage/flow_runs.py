"""Queries for flow runs and flow versions.

A shared SQLite transaction reads the open runs of its whole group in one statement
(`preload_open_runs`); the transaction's later reads of a preloaded customer's open runs come
from that list, which `add_run` keeps complete and the runs' own status keeps current. Runs
change only inside their customer's turn (the write lock on SQLite, the customer's row lock
elsewhere), so nothing outside the transaction can make the list stale.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
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


# session.info key: customer id → that customer's open runs, for the rest of the transaction.
_PRELOADED = "siyu.open_runs"


async def preload_open_runs(session: AsyncSession, customer_ids: Collection[int]) -> None:
    """Read the open runs of several customers in one statement, for this transaction's turns."""
    preloaded: dict[int, list[FlowRun]] = session.info.setdefault(_PRELOADED, {})
    wanted = [customer_id for customer_id in customer_ids if customer_id not in preloaded]
    for customer_id in wanted:
        preloaded[customer_id] = []
    if not wanted:
        return
    for run in (await session.execute(_open_runs_of_customers, {"ids": sorted(wanted)})).scalars():
        preloaded[run.customer_id].append(run)


def no_open_runs(session: AsyncSession, customer_id: int) -> None:
    """A customer created in this transaction has no runs yet: nothing to read."""
    session.info.setdefault(_PRELOADED, {})[customer_id] = []


async def open_runs(session: AsyncSession, customer_id: int) -> list[FlowRun]:
    preloaded = session.info.get(_PRELOADED, {}).get(customer_id)
    if preloaded is not None:
        return [run for run in preloaded if run.status in OPEN]
    return list((await session.execute(_open_runs_of_customer, {"customer_id": customer_id})).scalars())


def add_run(session: AsyncSession, run: FlowRun) -> None:
    """Add a new run to the transaction (and to its customer's preloaded open runs)."""
    session.add(run)
    preloaded = session.info.get(_PRELOADED, {}).get(run.customer_id)
    if preloaded is not None:
        preloaded.append(run)


# Built once: constructing a statement costs more than SQLite running it.
_open_runs_of_customer = (select(FlowRun).where(FlowRun.customer_id == bindparam("customer_id"),
                                                FlowRun.status.in_(OPEN)).order_by(FlowRun.id))
_open_runs_of_customers = (select(FlowRun).where(FlowRun.customer_id.in_(bindparam("ids", expanding=True)),
                                                 FlowRun.status.in_(OPEN)).order_by(FlowRun.id))


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
