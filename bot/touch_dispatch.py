"""Send due touches: claim a batch under a lease, re-check the policy per touch, record the outcome.

Delivery is at-least-once with the smallest gap we can make: under the customer's row lock the
touch is marked `sent`, its transcript row written and the window count bumped *before* the
platform call (inside a savepoint), and the transaction commits right after the platform says
yes. Only a crash between WeChat accepting the message and that COMMIT reaching the database
sends a touch twice (its lease runs out and another worker takes it). The alternative,
at-most-once (commit "attempted" first, then call), would silently lose the touch in the same
gap — and a lost order notice is worse than a rare repeated one. A worker that dies *before*
the platform accepted a message loses nothing: its leased touches are retaken after the lease.
"""

from __future__ import annotations

import asyncio
import os
import socket
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.wechat_api import QUOTA_USED, WINDOW_CLOSED
from bot.clock import Clock
from bot.outbox import DeliveryError, Sender
from bot.privacy import mask
from bot.touch_policy import (
    Action,
    Decision,
    SentCounts,
    TouchPolicySettings,
    close_window,
    count_window_send,
    decide,
    sent_counts,
    staff_holds,
)
from bot.touches import TouchStatus
from storage.conversations import current_conversation
from storage.models import Customer, Message, Touch

log = logging.getLogger(__name__)

SYSTEM_BUSY = -1  # WeChat's "system busy, retry later"
# The platform refused for the window's sake: record as skipped, never retry.
_WINDOW_ERRORS = {WINDOW_CLOSED: "window_closed", QUOTA_USED: "window_quota_used"}


@dataclass
class DispatchStats:
    claimed: int = 0
    sent: int = 0  # including template fallbacks
    templates: int = 0
    skipped: int = 0
    deferred: int = 0
    retried: int = 0
    failed: int = 0
    dropped: int = 0  # no longer ours: cancelled, sent elsewhere, or re-leased after expiry
    errors: int = 0  # database trouble; the lease runs out and another run takes the touch

    def add(self, other: DispatchStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


async def claim_due_touches(sessions: async_sessionmaker[AsyncSession], now: datetime, *,
                            limit: int, lease_seconds: float) -> tuple[list[tuple[int, int]], datetime]:
    """Lease up to `limit` due touches; returns (touch id, customer id) pairs and the lease.

    PostgreSQL and MySQL/MariaDB: FOR UPDATE SKIP LOCKED, so concurrent claimers get disjoint
    batches without waiting. SQLite has one writer (BEGIN IMMEDIATE), so one claimer at a time.
    The lease value doubles as a fencing token: a worker only sends a touch whose `lease_until`
    is still the one it set.
    """
    lease = now + timedelta(seconds=lease_seconds)
    async with sessions() as session, session.begin():
        query = (
            select(Touch.id, Touch.customer_id)
            .where(Touch.status == TouchStatus.PENDING.value, Touch.due_at <= now,
                   or_(Touch.lease_until.is_(None), Touch.lease_until < now))
            .order_by(Touch.priority.desc(), Touch.due_at, Touch.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name != "sqlite":
            query = query.with_for_update(skip_locked=True)
        claimed = [(row.id, row.customer_id) for row in (await session.execute(query)).all()]
        if claimed:
            await session.execute(
                update(Touch).where(Touch.id.in_([touch_id for touch_id, _ in claimed]))
                .values(lease_until=lease).execution_options(synchronize_session=False)
            )
    return claimed, lease


async def dispatch_due_touches(sessions: async_sessionmaker[AsyncSession], senders: Mapping[str, Sender],
                               settings: TouchPolicySettings, clock: Clock, worker_id: str) -> DispatchStats:
    """Claim and deliver due touches until none are left; one APScheduler job runs this."""
    total = DispatchStats()
    sqlite = sessions.kw.get("bind") is not None and sessions.kw["bind"].dialect.name == "sqlite"
    concurrency = 1 if sqlite else settings.concurrency
    while True:
        claimed, lease = await claim_due_touches(sessions, clock.now(), limit=settings.batch_size,
                                                 lease_seconds=settings.lease_seconds)
        if not claimed:
            break
        stats = DispatchStats(claimed=len(claimed))
        await _prepare(senders)
        # One customer's touches go in claim (priority) order; different customers in parallel.
        by_customer: dict[int, list[int]] = {}
        for touch_id, customer_id in claimed:
            by_customer.setdefault(customer_id, []).append(touch_id)
        gate = asyncio.Semaphore(concurrency)

        async def _customer(customer_id: int, touch_ids: Sequence[int]) -> None:
            async with gate:
                for touch_id in touch_ids:
                    await _deliver_one(sessions, senders, settings, clock, customer_id, touch_id, lease, stats)

        await asyncio.gather(*(_customer(customer_id, ids) for customer_id, ids in by_customer.items()))
        log.debug("worker %s: %s", worker_id, stats)
        total.add(stats)
        if len(claimed) < settings.batch_size:
            break
    return total


async def _prepare(senders: Mapping[str, Sender]) -> None:
    """Let senders refresh credentials (the access token is stored in the database) before we
    hold a transaction: on SQLite the single connection would otherwise wait for itself."""
    for sender in senders.values():
        prepare = getattr(sender, "prepare", None)
        if prepare is not None:
            try:
                await prepare()
            except Exception:  # noqa: BLE001 - the send itself reports the failure per touch
                log.warning("could not prepare %s", type(sender).__name__, exc_info=True)


async def _deliver_one(sessions: async_sessionmaker[AsyncSession], senders: Mapping[str, Sender],
                       settings: TouchPolicySettings, clock: Clock, customer_id: int, touch_id: int,
                       lease: datetime, stats: DispatchStats) -> None:
    try:
        async with sessions() as session, session.begin():
            await _deliver_locked(session, senders, settings, clock, customer_id, touch_id, lease, stats)
    except Exception:  # noqa: BLE001 - one touch's database trouble must not stop the batch
        stats.errors += 1
        log.exception("touch %s: dispatch failed; it is retried after its lease", touch_id)


async def _deliver_locked(session: AsyncSession, senders: Mapping[str, Sender], settings: TouchPolicySettings,
                          clock: Clock, customer_id: int, touch_id: int, lease: datetime,
                          stats: DispatchStats) -> None:
    # Customer first, touch second: the same order as the message path, which may cancel touches.
    customer = (
        await session.execute(select(Customer).where(Customer.id == customer_id).with_for_update())
    ).scalar_one()
    touch = (
        await session.execute(select(Touch).where(Touch.id == touch_id).with_for_update()
                              .execution_options(populate_existing=True))
    ).scalar_one()
    if touch.status != TouchStatus.PENDING or touch.lease_until != lease:
        stats.dropped += 1
        return
    now = clock.now()
    held = await staff_holds(session, customer.id)
    counts = await sent_counts(session, customer, now, settings) if touch.kind == "marketing" else SentCounts()
    decision = decide(touch, customer, now=now, settings=settings, held_by_staff=held, sent=counts)
    if decision.action is Action.SKIP:
        _finish(touch, TouchStatus.SKIPPED, decision.reason)
        stats.skipped += 1
        return
    if decision.action is Action.DEFER:
        assert decision.until is not None
        touch.due_at, touch.lease_until, touch.reason = decision.until, None, f"deferred: {decision.reason}"
        stats.deferred += 1
        return
    await _send(session, senders, settings, customer, touch, decision, now, stats)


async def _send(session: AsyncSession, senders: Mapping[str, Sender], settings: TouchPolicySettings,
                customer: Customer, touch: Touch, decision: Decision, now: datetime,
                stats: DispatchStats) -> None:
    via_template = decision.action is Action.TEMPLATE
    sender = senders.get(customer.channel)
    if sender is None:
        _finish(touch, TouchStatus.FAILED, f"channel {customer.channel} cannot push messages")
        stats.failed += 1
        return
    attempts = touch.attempts + 1
    # Record success first, inside a savepoint; the platform call comes last, so the commit
    # follows WeChat's "ok" as closely as possible.
    savepoint = await session.begin_nested()
    touch.attempts = attempts
    _finish(touch, TouchStatus.SENT, f"template: {decision.reason}" if via_template else None)
    touch.sent_at = now
    conversation = await current_conversation(session, customer, now)
    conversation.last_seq += 1
    session.add(Message(
        conversation_id=conversation.id, customer_id=customer.id, seq=conversation.last_seq,
        channel=customer.channel, direction="out", kind="template" if via_template else touch.body["type"],
        text=transcript_text(touch, via_template), delivery="push",
        payload={"touch_id": touch.id, "source": "touch", "touch_kind": touch.kind,
                 **({"template": touch.template} if via_template else {"body": touch.body})},
        created_at=now,
    ))
    if not via_template:
        count_window_send(customer)
    await session.flush()
    try:
        await _call(sender, customer.external_id, touch, via_template)
    except Exception as error:  # noqa: BLE001 - every failure is recorded on the touch
        await savepoint.rollback()
        # The rollback expired what the savepoint changed: load it again (locks still held).
        await session.refresh(customer)
        await session.refresh(touch)
        _record_failure(touch, customer, error, attempts, now, settings, stats)
        return
    await savepoint.commit()
    stats.sent += 1
    stats.templates += via_template


async def _call(sender: Sender, user_id: str, touch: Touch, via_template: bool) -> None:
    """Through the sender's richest method; a text-only sender (the simulator) gets the text."""
    if via_template:
        send_template = getattr(sender, "send_template", None)
        assert touch.template is not None
        if send_template is not None:
            await send_template(user_id, touch.template)
        else:
            await sender.send_text(user_id, transcript_text(touch, True))
        return
    send = getattr(sender, "send", None)
    if send is not None:
        await send(user_id, touch.body)
    else:
        await sender.send_text(user_id, transcript_text(touch, False))


def _record_failure(touch: Touch, customer: Customer, error: Exception, attempts: int, now: datetime,
                    settings: TouchPolicySettings, stats: DispatchStats) -> None:
    touch.attempts = attempts
    code = error.code if isinstance(error, DeliveryError) else None
    if code in _WINDOW_ERRORS:
        # WeChat disagrees with our count: believe it, and don't knock again.
        if code == WINDOW_CLOSED:
            close_window(customer)
        else:
            customer.window_used = max(customer.window_quota, customer.window_used)
        _finish(touch, TouchStatus.SKIPPED, f"{_WINDOW_ERRORS[code]} ({code})")
        stats.skipped += 1
        return
    reason = error.reason if isinstance(error, DeliveryError) else f"{type(error).__name__}: {error}".rstrip(": ")
    permanent = isinstance(error, DeliveryError) and code != SYSTEM_BUSY
    if permanent or attempts >= settings.max_attempts:
        _finish(touch, TouchStatus.FAILED, reason)
        stats.failed += 1
        log.warning("touch %s to %s failed after %d attempts: %s", touch.id, mask(customer.external_id),
                    attempts, reason)
        return
    delay = min(settings.backoff_seconds * 2 ** (attempts - 1), settings.backoff_max_seconds)
    touch.due_at, touch.lease_until, touch.reason = now + timedelta(seconds=delay), None, f"retrying: {reason}"
    stats.retried += 1


def _finish(touch: Touch, status: TouchStatus, reason: str | None) -> None:
    touch.status, touch.reason, touch.lease_until = status.value, reason, None


def transcript_text(touch: Touch, via_template: bool) -> str:
    """What staff see in the transcript for a touch."""
    if via_template:
        assert touch.template is not None
        return "[模板消息] " + "；".join(str(value) for value in touch.template["data"].values())
    body: dict[str, Any] = touch.body
    if body["type"] == "text":
        return str(body["text"])
    if body["type"] == "news":
        article = body["articles"][0]
        return f"[图文] {article['title']} {article['url']}"
    return "[图片]"


def default_worker_id() -> str:
    """Names this process in logs: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"
