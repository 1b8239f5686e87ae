"""Queries for flow runs and flow versions."""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, column, event, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from storage import sqlite_direct
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
    if customer_id in _known_without_open_runs(session):
        return []
    return list((await session.execute(
        select(FlowRun).where(FlowRun.customer_id == customer_id, FlowRun.status.in_(OPEN))
        .order_by(FlowRun.id)
    )).scalars())


# Most customers have no open run, and asking per message costs a query plus an autoflush of
# everything pending. A writer that handles many customers in one transaction asks once for all
# of them; the answer holds until commit because every run is added through this session (the
# listener below forgets a customer as soon as one is) and, on SQLite, the transaction holds the
# database's one write lock, so no other writer can add one meanwhile.
_WITHOUT_OPEN_RUNS = "flows.customers_without_open_runs"


async def note_customers_without_open_runs(session: AsyncSession, customer_ids: Sequence[int],
                                           known: set[int] | None = None) -> None:
    """Look up, in one query, which of these customers have no open run, and remember it for
    this transaction (`open_runs` then answers them without a query). SQLite's group writer.

    `known`: customers the writer's previous transaction ended without an open run, when
    nothing was written since (see storage.warm_rows). They are not asked about again, and the
    set becomes this transaction's own record, kept up to date in place: what it holds when
    the transaction commits is true after it.
    """
    ids = set(customer_ids)
    unknown = ids - known if known is not None else ids
    with_runs = set(await sqlite_direct.scalars(
        session, _customers_with_open_runs, {"ids": sqlite_direct.as_json_list(sorted(unknown))})) if unknown else set()
    remember_without_open_runs(session, unknown - with_runs, record=known)


# Built once: constructing and coercing a statement costs more than SQLite running it.
_customers_with_open_runs = select(FlowRun.customer_id).where(
    FlowRun.customer_id.in_(select(column("value")).select_from(func.json_each(bindparam("ids")))),
    or_(*(FlowRun.status == status for status in OPEN)))


def remember_without_open_runs(session: AsyncSession, customer_ids: AbstractSet[int],
                               record: set[int] | None = None) -> None:
    """Customers known to have no open run in this transaction (new customers, say).
    `record`: the set to keep them in from now on (the SQLite writer's, whose SQLAlchemy
    transaction spans several of its SQLite transactions: see storage.warm_rows)."""
    sync = session.sync_session
    transaction = sync.get_transaction()
    if transaction is None:
        return
    noted = sync.info.get(_WITHOUT_OPEN_RUNS)
    if record is not None or noted is None or noted[0] is not transaction:
        noted = (transaction, record if record is not None else set[int]())
        sync.info[_WITHOUT_OPEN_RUNS] = noted
        if not event.contains(sync, "transient_to_pending", _forget_customer_of_new_run):
            event.listen(sync, "transient_to_pending", _forget_customer_of_new_run)
    noted[1].update(customer_ids)


def _known_without_open_runs(session: AsyncSession) -> set[int]:
    sync = session.sync_session
    noted = sync.info.get(_WITHOUT_OPEN_RUNS)
    if noted is None or noted[0] is not sync.get_transaction():
        return set()
    return noted[1]


def _forget_customer_of_new_run(session: Session, instance: object) -> None:
    if isinstance(instance, FlowRun):
        noted = session.info.get(_WITHOUT_OPEN_RUNS)
        if noted is not None:
            if instance.customer_id is None:  # customer given by relationship: forget them all
                noted[1].clear()
            else:
                noted[1].discard(instance.customer_id)


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
