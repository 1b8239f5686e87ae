"""The points ledger: earn (with an expiry), spend oldest first, adjust, expire, summarise.

Every change is a ledger row; `customers.points_balance` moves in the same transaction. Earned
rows keep `remaining`, so spending and expiry always take the oldest points first. Callers
hold the customer's row lock (the pipeline and business events do).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Row, Table, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flows.lifecycle_settings import PointsSettings
from flows.timezones import zone_or_default
from storage.models import Customer, PointsEntry, UTCDateTime

log = logging.getLogger(__name__)

EXPIRED_REASON = "积分过期"
SCAN_SPAN = 10_000  # ledger ids one candidate query looks at: its cost never grows with the ledger
PROGRESS_LOG_SECONDS = 10.0


# customers.points_balance and the ledger's delta are 32-bit integers on every database.
MAX_BALANCE = 2**31 - 1


class BalanceLimit(ValueError):
    def __init__(self, balance: int, points: int):
        super().__init__(f"the balance {balance} plus {points} would exceed {MAX_BALANCE} points")


class InsufficientPoints(ValueError):
    def __init__(self, available: int, wanted: int):
        super().__init__(f"only {available} points available, {wanted} wanted")
        self.available = available
        self.wanted = wanted


@dataclass(frozen=True)
class PointsChange:
    kind: str  # earn, spend, expire, adjust
    delta: int
    reason: str
    occurred_at: datetime


@dataclass(frozen=True)
class PointsSummary:
    balance: int
    recent: list[PointsChange]
    expiring_soon: int  # points that expire within the configured window
    expiring_on: date | None  # the first of those expiry dates, in the customer's timezone


def points_for_amount(amount: Decimal, settings: PointsSettings) -> int:
    """Points an order of `amount` yuan earns: rounded down, never negative."""
    return max(0, int((amount * settings.earn_per_yuan).to_integral_value(rounding=ROUND_FLOOR)))


def earn(session: AsyncSession, customer: Customer, points: int, reason: str, when: datetime,
         settings: PointsSettings, *, source_event_id: str | None = None,
         kind: str = "earn") -> PointsEntry:
    """Credit points that expire `validity_days` after `when`."""
    if points <= 0:
        raise ValueError("points to earn must be positive")
    if (customer.points_balance or 0) + points > MAX_BALANCE:
        raise BalanceLimit(customer.points_balance or 0, points)
    entry = PointsEntry(customer_id=customer.id, kind=kind, delta=points, remaining=points,
                        reason=reason, expires_at=when + timedelta(days=settings.validity_days),
                        occurred_at=when, source_event_id=source_event_id)
    session.add(entry)
    customer.points_balance = (customer.points_balance or 0) + points
    return entry


async def spend(session: AsyncSession, customer: Customer, points: int, reason: str, now: datetime,
                *, source_event_id: str | None = None, kind: str = "spend") -> PointsEntry:
    """Debit points, taking them from the rows that expire first; InsufficientPoints if short."""
    if points <= 0:
        raise ValueError("points to spend must be positive")
    rows = list((await session.execute(
        select(PointsEntry)
        .where(PointsEntry.customer_id == customer.id, PointsEntry.remaining > 0,
               (PointsEntry.expires_at.is_(None)) | (PointsEntry.expires_at > now))
        .order_by(PointsEntry.expires_at.is_(None), PointsEntry.expires_at, PointsEntry.id)
        .with_for_update()
    )).scalars())
    available = sum(row.remaining for row in rows)
    if available < points:
        raise InsufficientPoints(available, points)
    left = points
    for row in rows:
        taken = min(left, row.remaining)
        row.remaining -= taken
        left -= taken
        if left == 0:
            break
    entry = PointsEntry(customer_id=customer.id, kind=kind, delta=-points, remaining=0, reason=reason,
                        expires_at=None, occurred_at=now, source_event_id=source_event_id)
    session.add(entry)
    customer.points_balance = (customer.points_balance or 0) - points
    return entry


async def adjust(session: AsyncSession, customer: Customer, delta: int, reason: str, now: datetime,
                 settings: PointsSettings, *, source_event_id: str | None = None) -> PointsEntry:
    """A correction by the brand: added points expire like earned ones; removed ones go oldest first."""
    if delta > 0:
        return earn(session, customer, delta, reason, now, settings, source_event_id=source_event_id,
                    kind="adjust")
    if delta < 0:
        return await spend(session, customer, -delta, reason, now, source_event_id=source_event_id,
                           kind="adjust")
    raise ValueError("an adjustment must change the balance")


async def expire_points(sessions: async_sessionmaker[AsyncSession], now: datetime,
                        batch_size: int = 2000) -> dict[str, int]:
    """Expire every earned row past its date: `expire` rows written and balances lowered per batch.

    Safe with several processes: customer rows are locked first (the order the message path
    uses), then the ledger rows are re-checked under lock, so a row is expired once. However
    long the ledger, no statement reads more than SCAN_SPAN ledger ids, each batch is its own
    short transaction, and other work runs between batches.
    """
    totals = {"entries": 0, "points": 0, "customers": 0}
    async with sessions() as session:
        lowest, highest = (await session.execute(select(func.min(PointsEntry.id), func.max(PointsEntry.id)))).one()
    if lowest is None:
        return totals
    after = lowest - 1
    loop = asyncio.get_running_loop()
    logged = loop.time()
    while after < highest:
        upper = min(after + SCAN_SPAN, highest)
        async with sessions() as session, session.begin():
            candidates = (await session.execute(
                select(PointsEntry.id, PointsEntry.customer_id)
                .where(PointsEntry.remaining > 0, PointsEntry.expires_at <= now,
                       PointsEntry.id > after, PointsEntry.id <= upper)
                .order_by(PointsEntry.id).limit(batch_size)
            )).all()
            # A full batch may leave more in this window; otherwise the window is done.
            after = candidates[-1].id if len(candidates) == batch_size else upper
            if candidates:
                await _expire_batch(session, candidates, now, totals)
        if loop.time() - logged >= PROGRESS_LOG_SECONDS:
            logged = loop.time()
            log.info("points expiry: at ledger id %d of %d, %s so far", after, highest, totals)
        await asyncio.sleep(0)  # let customers' messages have the database between batches
    if totals["entries"]:
        log.info("points expiry: %s", totals)
    return totals


async def _expire_batch(session: AsyncSession, candidates: Sequence[Row[int, int]], now: datetime,
                        totals: dict[str, int]) -> None:
    customer_ids = sorted({row.customer_id for row in candidates})
    await session.execute(select(Customer.id).where(Customer.id.in_(customer_ids))
                          .order_by(Customer.id).with_for_update())
    locked = (await session.execute(
        select(PointsEntry.id, PointsEntry.remaining)
        .where(PointsEntry.id.in_([row.id for row in candidates]), PointsEntry.remaining > 0,
               PointsEntry.expires_at <= now)
        .with_for_update()
    )).all()
    if not locked:
        return
    ids = [row.id for row in locked]
    await _expire_rows(session, ids, customer_ids, now)
    totals["entries"] += len(ids)
    totals["points"] += sum(row.remaining for row in locked)
    totals["customers"] += len(customer_ids)


async def _expire_rows(session: AsyncSession, ids: list[int], customer_ids: list[int],
                       now: datetime) -> None:
    ledger = cast(Table, PointsEntry.__table__)
    await session.execute(insert(ledger).from_select(
        ["customer_id", "kind", "delta", "remaining", "reason", "occurred_at"],
        select(ledger.c.customer_id, literal("expire"), -ledger.c.remaining, literal(0),
               literal(EXPIRED_REASON), literal(now, UTCDateTime()))
        .where(ledger.c.id.in_(ids)),
    ))
    expired = (select(func.coalesce(func.sum(ledger.c.remaining), 0))
               .where(ledger.c.customer_id == Customer.id, ledger.c.id.in_(ids))
               .scalar_subquery())
    await session.execute(update(Customer).where(Customer.id.in_(customer_ids))
                          .values(points_balance=Customer.points_balance - expired)
                          .execution_options(synchronize_session=False))
    await session.execute(update(ledger).where(ledger.c.id.in_(ids)).values(remaining=0))


async def points_summary(session: AsyncSession, customer_id: int, now: datetime, *,
                         expiring_within_days: int = 30, recent_limit: int = 5) -> PointsSummary:
    """What the points-query flow tells a customer: balance, last changes, what expires soon."""
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise LookupError(f"no customer {customer_id}")
    recent = [PointsChange(row.kind, row.delta, row.reason, row.occurred_at) for row in (
        await session.execute(
            select(PointsEntry).where(PointsEntry.customer_id == customer_id)
            .order_by(PointsEntry.occurred_at.desc(), PointsEntry.id.desc()).limit(recent_limit)
        )).scalars()]
    soon: Any = (await session.execute(
        select(func.coalesce(func.sum(PointsEntry.remaining), 0), func.min(PointsEntry.expires_at))
        .where(PointsEntry.customer_id == customer_id, PointsEntry.remaining > 0,
               PointsEntry.expires_at > now,
               PointsEntry.expires_at <= now + timedelta(days=expiring_within_days))
    )).one()
    first = soon[1]
    if first is not None and not isinstance(first, datetime):
        first = UTCDateTime().process_result_value(first, None)  # func.min loses the column type
    if first is not None and first.tzinfo is None:
        first = first.replace(tzinfo=ZoneInfo("UTC"))
    expiring_on = first.astimezone(zone_or_default(customer.timezone)).date() if first is not None else None
    return PointsSummary(balance=customer.points_balance or 0, recent=recent,
                         expiring_soon=int(soon[0] or 0), expiring_on=expiring_on)



