"""Where each customer is in the lifecycle, and what moves them.

contact → interest → purchase → use → loyalty → at_risk → churned. Messages and business
events move a customer as they happen; `lifecycle_sweep` moves the silent ones (at_risk,
churned) in set-based batches. Every move is a `stage_changes` row and a reaction.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, literal, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flows.lifecycle_settings import LifecycleSettings
from flows.pacing import Pacer
from flows.reactions import NoReactions, Reactions
from flows.stages import LifecycleStageName
from flows.turn import Next, Turn
from handlers.messages import EventKind, InboundKind
from storage.conversations import log_event
from storage.db import is_retryable
from storage.lifecycle_models import SweepLock
from storage.models import Customer, Event, Order, StageChange, Touch, UTCDateTime
from storage.upsert import insert_ignore
from storage.workers import lease_holder

log = logging.getLogger(__name__)

ENGAGEMENT = "engagement"  # events.kind of one engaged interaction
SWEEP_LEASE = timedelta(minutes=15)


S = LifecycleStageName


async def move_stage(session: AsyncSession, customer: Customer, to_stage: str, reason: str,
                     now: datetime, reactions: Reactions) -> bool:
    """Move one customer: a stage_changes row, the customer's stage, the reaction. False if already there."""
    from_stage: str | None = customer.stage
    if from_stage == to_stage and customer.stage_changed_at is not None:
        return False
    if from_stage == to_stage:  # first recorded stage (contact): no stage to come from
        from_stage = None
    session.add(StageChange(customer_id=customer.id, from_stage=from_stage, to_stage=to_stage,
                            reason=reason[:255], occurred_at=now))
    customer.stage = to_stage
    customer.stage_changed_at = now
    await reactions.on_stage_change(session, customer, from_stage, to_stage, now)
    return True


async def record_first_contact(session: AsyncSession, customer: Customer, reason: str, now: datetime,
                               reactions: Reactions) -> bool:
    """The customer's first stage as a stage change (nothing → contact), once."""
    if customer.stage_changed_at is not None:
        return False
    return await move_stage(session, customer, customer.stage or S.CONTACT, reason, now, reactions)


async def mark_at_risk(session: AsyncSession, customer: Customer, reason: str, now: datetime,
                       reactions: Reactions) -> bool:
    """A warning signal from outside the sweep (a low survey score, a complaint)."""
    if customer.stage in (S.AT_RISK, S.CHURNED):
        return False
    return await move_stage(session, customer, S.AT_RISK, reason, now, reactions)


def is_engaged(signal: str | None, settings: LifecycleSettings) -> bool:
    return bool(signal) and (signal in settings.engaged_intents or signal in settings.engaged_actions)


async def evaluate_after_message(session: AsyncSession, customer: Customer, intent: str | None,
                                 now: datetime, settings: LifecycleSettings, reactions: Reactions) -> bool:
    """Count an engaged interaction and move to interest after N of them within D days.

    `intent` is the message's intent, or an action: menu_click, link_view, store_visit.
    A churned customer who engages again comes back as interest too.
    """
    if not is_engaged(intent, settings):
        return False
    log_event(session, customer.id, ENGAGEMENT, now, {"signal": intent})
    if customer.stage not in (S.CONTACT, S.CHURNED):
        return False
    since = now - timedelta(days=settings.interest_window_days)
    engaged = (await session.execute(
        select(func.count()).select_from(Event)
        .where(Event.customer_id == customer.id, Event.kind == ENGAGEMENT, Event.occurred_at > since)
    )).scalar_one()
    return await move_if_interested(session, customer, engaged, now, settings, reactions)


async def move_if_interested(session: AsyncSession, customer: Customer, engaged: int, now: datetime,
                             settings: LifecycleSettings, reactions: Reactions) -> bool:
    """Interest once `engaged` interactions within the window reach the threshold (from contact,
    or back from churned)."""
    if engaged < settings.interest_interactions or customer.stage not in (S.CONTACT, S.CHURNED):
        return False
    await record_first_contact(session, customer, "first contact", now, reactions)
    return await move_stage(session, customer, S.INTEREST,
                            f"{engaged} engaged interactions within {settings.interest_window_days} days",
                            now, reactions)


def purchase_overdue_at(customer: Customer, settings: LifecycleSettings) -> datetime | None:
    """When no further order makes the customer at_risk: max(F × usual interval, minimum)."""
    if customer.last_order_at is None:
        return None
    days = float(settings.at_risk_min_days)
    if customer.orders_count >= 2 and customer.first_order_at is not None:
        usual = (customer.last_order_at - customer.first_order_at) / (customer.orders_count - 1)
        days = max(days, settings.at_risk_interval_factor * usual.total_seconds() / 86400)
    return customer.last_order_at + timedelta(days=days)


async def evaluate_after_order(session: AsyncSession, customer: Customer, reason: str, now: datetime,
                               settings: LifecycleSettings, reactions: Reactions) -> str:
    """An order was paid: loyalty when K orders within the period or lifetime spend ≥ S, else purchase."""
    since = now - timedelta(days=settings.loyalty_period_days)
    recent_orders = (await session.execute(
        select(func.count()).select_from(Order)
        .where(Order.customer_id == customer.id, Order.status != "refunded", Order.paid_at > since)
    )).scalar_one()
    loyal = (recent_orders >= settings.loyalty_orders
             or (customer.lifetime_spend or 0) >= settings.loyalty_lifetime_spend)
    target = S.LOYALTY if loyal or customer.stage == S.LOYALTY else S.PURCHASE
    await record_first_contact(session, customer, "first contact", now, reactions)
    await move_stage(session, customer, target, reason, now, reactions)
    return target


async def evaluate_after_delivery(session: AsyncSession, customer: Customer, reason: str,
                                  now: datetime, reactions: Reactions) -> bool:
    """An order was delivered: the customer is using it (loyal customers stay loyal)."""
    if customer.stage == S.LOYALTY:
        return False
    return await move_stage(session, customer, S.USE, reason, now, reactions)


class LifecycleMiddleware:
    """After the turn (whoever handled it): record the first contact, count engagement, and move
    the customer on unfollow (churned) and on a follow after churning (contact again).

    Outermost in the pipeline, so it sees every message, also those another middleware handled."""

    def __init__(self, settings: LifecycleSettings, reactions: Reactions | None = None):
        self._settings = settings
        self._reactions = reactions or NoReactions()

    async def __call__(self, turn: Turn, next: Next) -> None:
        await next(turn)
        customer, now, inbound = turn.customer, turn.now, turn.inbound
        await record_first_contact(turn.session, customer, "first contact", now, self._reactions)
        if inbound.kind is InboundKind.EVENT:
            if inbound.event is EventKind.UNSUBSCRIBE:
                if self._settings.churn_on_unsubscribe:
                    await move_stage(turn.session, customer, S.CHURNED, "unsubscribed", now, self._reactions)
                return
            if inbound.event is EventKind.SUBSCRIBE and customer.stage == S.CHURNED:
                await move_stage(turn.session, customer, S.CONTACT, "subscribed again", now, self._reactions)
                return
            signals: dict[EventKind | None, str] = {EventKind.CLICK: "menu_click", EventKind.VIEW: "link_view"}
            signal = signals.get(inbound.event)
        else:
            signal = turn.match.intent if turn.match else None
        await evaluate_after_message(turn.session, customer, signal, now, self._settings, self._reactions)


# ---- the sweep -------------------------------------------------------------------------------


def _sweep_rules(settings: LifecycleSettings, now: datetime) -> list[tuple[str, str, str, Any]]:
    """(name, to_stage, reason, condition): churn first, so nobody is warned on the way out."""
    cutoff = now - timedelta(days=settings.churn_inactive_days)
    rules: list[tuple[str, str, str, Any]] = []
    if settings.churn_on_unsubscribe:
        rules.append(("churned_unsubscribed", S.CHURNED, "unsubscribed",
                      and_(Customer.stage != S.CHURNED, Customer.subscribed.is_(False))))
    inactive = and_(
        Customer.stage != S.CHURNED, Customer.created_at < cutoff,
        or_(Customer.last_inbound_at.is_(None), Customer.last_inbound_at < cutoff),
        or_(Customer.last_order_at.is_(None), Customer.last_order_at < cutoff),
        or_(Customer.last_active_at.is_(None), Customer.last_active_at < cutoff),
    )
    rules.append(("churned_inactive", S.CHURNED,
                  f"inactive for {settings.churn_inactive_days} days", inactive))
    stages = [s for s in settings.at_risk_stages if s not in (S.AT_RISK, S.CHURNED)]
    rules.append(("at_risk_overdue", S.AT_RISK, "no purchase past the usual interval",
                  and_(Customer.stage.in_(stages), Customer.purchase_overdue_at <= now)))
    if settings.at_risk_unanswered_touches:
        unanswered = (
            select(func.count()).select_from(Touch)
            .where(Touch.customer_id == Customer.id, Touch.status == "sent",
                   Touch.sent_at > func.coalesce(Customer.last_inbound_at, Customer.created_at))
            .scalar_subquery()
        )
        rules.append(("at_risk_unanswered", S.AT_RISK,
                      f"{settings.at_risk_unanswered_touches} touches unanswered",
                      and_(Customer.stage.in_(stages), unanswered >= settings.at_risk_unanswered_touches)))
    return rules


async def lifecycle_sweep(sessions: async_sessionmaker[AsyncSession], settings: LifecycleSettings,
                          now: datetime, reactions: Reactions | None = None) -> dict[str, int]:
    """Move silent customers to at_risk / churned; counts per rule ({"locked": 0} if another runs).

    However many customers there are, no statement reads more than SCAN_SPAN ids and no
    transaction stays open long (see `_move_matching`); other work runs between batches.
    """
    reactions = reactions or NoReactions()
    holder = lease_holder()
    if not await acquire_sweep_lock(sessions, "lifecycle", holder, now):
        log.info("lifecycle sweep already running elsewhere")
        return {"locked": 0}
    counts: dict[str, int] = {}
    try:
        async with sessions() as session:
            lowest, highest = (await session.execute(select(func.min(Customer.id), func.max(Customer.id)))).one()
        if lowest is not None:
            progress = _Progress(lowest, highest, _Lease(sessions, "lifecycle", holder, now))
            size = _Size(settings.sweep_batch_size, adaptive=not isinstance(reactions, NoReactions))
            for name, to_stage, reason, condition in _sweep_rules(settings, now):
                progress.rule = name
                counts[name] = await _move_matching(sessions, condition, to_stage, reason, now, lowest - 1,
                                                    highest, size, reactions, progress)
    finally:
        await release_sweep_lock(sessions, "lifecycle", holder)
    counts["at_risk"] = counts.get("at_risk_overdue", 0) + counts.get("at_risk_unanswered", 0)
    counts["churned"] = counts.get("churned_unsubscribed", 0) + counts.get("churned_inactive", 0)
    if counts["at_risk"] or counts["churned"]:
        log.info("lifecycle sweep: %s", counts)
    return counts


SCAN_SPAN = 10_000  # ids one candidate query looks at: its cost never grows with the table
# A transaction that also starts flows (one customer at a time) is sized so that the reactions
# take about this long, so the database (SQLite's one connection) is free for customers' messages
# between batches. The set-based move itself is a few statements whatever the batch size.
REACTION_BATCH_SECONDS = 0.02
FIRST_REACTION_BATCH = 10
PROGRESS_LOG_SECONDS = 10.0
BATCH_ATTEMPTS = 3


class _Size:
    """Customers per transaction: `sweep_batch_size`, or, while flows react to each move, as many
    as their reactions fit in REACTION_BATCH_SECONDS (starting small, growing at most eightfold
    per batch)."""

    def __init__(self, limit: int, adaptive: bool):
        self.limit, self.adaptive = limit, adaptive
        self.current = min(limit, FIRST_REACTION_BATCH) if adaptive else limit

    def took(self, customers: int, seconds: float) -> None:
        if not self.adaptive or not customers:
            return
        fits = int(customers * REACTION_BATCH_SECONDS / max(seconds, 1e-6))
        self.current = max(1, min(self.limit, 8 * self.current, fits))


class _Lease:
    """The sweep's lease, renewed while it runs: a sweep that gives way to customers can outlast
    SWEEP_LEASE, and another process must not start a second one meanwhile."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], name: str, holder: str, now: datetime):
        self.sessions, self.name, self.holder, self.now = sessions, name, holder, now
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()

    async def renew(self) -> None:
        running = timedelta(seconds=self._loop.time() - self._started)
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(SweepLock).where(SweepLock.name == self.name, SweepLock.holder == self.holder)
                .values(locked_until=self.now + running + SWEEP_LEASE)
                .execution_options(synchronize_session=False))


class _Progress:
    """Every PROGRESS_LOG_SECONDS of a long sweep: a line in the log (which rule, how far, how
    many) and the lease renewed."""

    def __init__(self, lowest: int, highest: int, lease: _Lease):
        self.lowest, self.highest, self.rule, self.moved = lowest, highest, "", 0
        self._lease = lease
        self._loop = asyncio.get_running_loop()
        self._logged = self._loop.time()

    async def batch_done(self, after: int, moved: int) -> None:
        self.moved += moved
        if self._loop.time() - self._logged >= PROGRESS_LOG_SECONDS:
            self._logged = self._loop.time()
            done = (after - self.lowest + 1) / max(1, self.highest - self.lowest + 1)
            log.info("lifecycle sweep: rule %s at customer id %d (%.0f%% of ids), %d moved so far",
                     self.rule, after, 100 * min(done, 1.0), self.moved)
            await self._lease.renew()


async def _move_matching(sessions: async_sessionmaker[AsyncSession], condition: ColumnElement[bool],
                         to_stage: str, reason: str, now: datetime, after: int, highest: int, size: _Size,
                         reactions: Reactions, progress: _Progress) -> int:
    """Move every customer matching `condition`, in id order, one short transaction per batch.

    Candidates are read without locks from a window of at most SCAN_SPAN ids, then locked by
    primary key and re-checked, so a customer whose message or order landed meanwhile is left
    alone. Between batches the event loop runs other work.
    """
    moved_total = 0
    pacer = Pacer()
    while after < highest:
        upper = min(after + SCAN_SPAN, highest)
        window = and_(Customer.id > after, Customer.id <= upper)
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                taken, previous, reacting = await _move_window(sessions, condition, window, to_stage, reason, now,
                                                     size.current, reactions)
                break
            except DBAPIError as error:
                # The database broke a deadlock with a touch dispatch or a message (MySQL gap
                # locks): nothing of the batch was kept, so it runs again.
                if not is_retryable(error) or attempt == BATCH_ATTEMPTS:
                    raise
                log.info("lifecycle sweep batch after id %d deadlocked; retrying", after)
        # A full batch may leave more in this window; otherwise the window is done.
        after = taken[-1] if len(taken) == size.current else upper
        moved_total += len(previous)
        size.took(len(previous), reacting)
        await progress.batch_done(after, len(previous))
        await pacer.pause()  # customers' messages have the loop and the database between batches
    return moved_total


async def _move_window(sessions: async_sessionmaker[AsyncSession], condition: ColumnElement[bool],
                       window: ColumnElement[bool], to_stage: str, reason: str, now: datetime, limit: int,
                       reactions: Reactions) -> tuple[list[int], dict[int, str], float]:
    """One transaction: the first `limit` matching customers of the window moved and reacted to;
    (ids taken, {id moved: stage before}, seconds the reactions took)."""
    async with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            previous = await _move_batch_postgresql(session, condition, window, to_stage, reason, now, limit)
            taken = sorted(previous)
        else:
            taken = list((await session.execute(
                select(Customer.id).where(condition, window).order_by(Customer.id).limit(limit)
            )).scalars())
            previous = await _move_batch(session, condition, taken, to_stage, reason, now)
        reacting = await _react(session, previous, to_stage, now, reactions)
    return taken, previous, reacting


async def _move_batch(session: AsyncSession, condition: ColumnElement[bool], candidates: list[int],
                      to_stage: str, reason: str, now: datetime) -> dict[int, str]:
    """Lock the candidates still matching, log their moves and move them; {id: stage before}."""
    if not candidates:
        return {}
    previous: dict[int, str] = {row[0]: row[1] for row in (await session.execute(
        select(Customer.id, Customer.stage).where(Customer.id.in_(candidates), condition)
        .order_by(Customer.id).with_for_update()
    )).all()}
    if not previous:
        return previous
    ids = list(previous)
    await session.execute(insert(StageChange).from_select(
        ["customer_id", "from_stage", "to_stage", "reason", "occurred_at"],
        select(Customer.id, Customer.stage, literal(str(to_stage)), literal(reason),
               literal(now, UTCDateTime()))
        .where(Customer.id.in_(ids)),
    ))
    await session.execute(
        update(Customer).where(Customer.id.in_(ids))
        .values(stage=str(to_stage), stage_changed_at=now)
        .execution_options(synchronize_session=False)
    )
    return previous


async def _move_batch_postgresql(session: AsyncSession, condition: ColumnElement[bool],
                                 window: ColumnElement[bool], to_stage: str, reason: str, now: datetime,
                                 batch_size: int) -> dict[int, str]:
    """One statement per batch: pick (skipping customers locked by a message in flight), log, move."""
    picked = (select(Customer.id, Customer.stage).where(condition, window)
              .order_by(Customer.id).limit(batch_size).with_for_update(skip_locked=True).cte("picked"))
    # id = ANY(ARRAY(…)) keeps the update on the primary key whatever the planner guesses of the CTE.
    moved = (update(Customer)
             .where(Customer.id == func.any(func.array(select(picked.c.id).scalar_subquery())))
             .values(stage=str(to_stage), stage_changed_at=now)
             .returning(Customer.id).cte("moved"))
    result = await session.execute(
        insert(StageChange).from_select(
            ["customer_id", "from_stage", "to_stage", "reason", "occurred_at"],
            select(picked.c.id, picked.c.stage, literal(str(to_stage)), literal(reason),
                   literal(now, UTCDateTime()))
            .where(picked.c.id.in_(select(moved.c.id))),
        ).returning(StageChange.customer_id, StageChange.from_stage)
    )
    return {row[0]: row[1] or "" for row in result.all()}


async def _react(session: AsyncSession, previous: dict[int, str], to_stage: str, now: datetime,
                 reactions: Reactions) -> float:
    """Hand the moved customers to the flow engine, loaded in one query per batch; returns the
    seconds the reactions themselves took."""
    if isinstance(reactions, NoReactions) or not previous:
        return 0.0
    loop = asyncio.get_running_loop()
    reacting = 0.0
    for customer in (await session.execute(
            select(Customer).where(Customer.id.in_(list(previous))).order_by(Customer.id)
            .execution_options(populate_existing=True))).scalars():
        started = loop.time()
        await reactions.on_stage_change(session, customer, previous.get(customer.id), str(to_stage), now)
        reacting += loop.time() - started
    return reacting


async def acquire_sweep_lock(sessions: async_sessionmaker[AsyncSession], name: str, holder: str,
                             now: datetime, lease: timedelta = SWEEP_LEASE) -> bool:
    """Take the named sweep lease unless another holder's lease is still running."""
    async with sessions() as session, session.begin():
        dialect = session.get_bind().dialect.name
        await session.execute(insert_ignore(dialect, SweepLock, {"name": name, "holder": None,
                                                                "locked_until": None}))
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(SweepLock)
            .where(SweepLock.name == name,
                   or_(SweepLock.locked_until.is_(None), SweepLock.locked_until < now))
            .values(holder=holder, locked_until=now + lease)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_sweep_lock(sessions: async_sessionmaker[AsyncSession], name: str, holder: str) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(SweepLock).where(SweepLock.name == name, SweepLock.holder == holder)
            .values(holder=None, locked_until=None).execution_options(synchronize_session=False)
        )
