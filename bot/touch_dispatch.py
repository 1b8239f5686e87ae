"""Send due touches: claim a batch under a lease, re-check the policy, record every outcome.

Delivery is at-least-once with the smallest gap we can make: under the customer's row lock the
touch is marked `sent`, its transcript row written and the window count bumped *before* the
platform call, and the transaction commits right after the platform answered. Only a crash
between WeChat accepting the message and that COMMIT reaching the database sends a touch twice
(its lease runs out and another worker takes it). The alternative, at-most-once (commit
"attempted" first, then call), would silently lose the touch in the same gap — and a lost order
notice is worse than a rare repeated one. A worker that dies *before* the platform accepted a
message loses nothing: its leased touches are retaken after the lease.

Throughput: the claim reads everything that never changes after enqueueing (kind, body,
template, attempts — only the lease holder changes those). Touches of up to GROUP_SIZE different
customers then share one transaction: their customers locked in id order, the touches still ours
(pending under our lease) locked next, staff hold, open conversations and marketing counts read
with one statement each, the writes sent as executemany, the platform calls made concurrently, a
refused call undone under the same locks. Statements are Core, built once. `[touches]
concurrency` groups run at once, each on its own connection (SQLite has one writer: one group at
a time); one customer's touches go in claim order, one per group.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from bot.channels.wechat_api import QUOTA_USED, WINDOW_CLOSED
from bot.clock import Clock
from bot.handoff import HELD_STATES
from bot.outbox import DeliveryError, Sender
from bot.privacy import mask
from bot.touch_policy import (
    Action,
    SentCounts,
    TouchPolicySettings,
    customer_zone,
    decide,
    period_starts,
)
from bot.touches import TouchStatus
from storage.models import Conversation, Customer, Message, Touch

log = logging.getLogger(__name__)

SYSTEM_BUSY = -1  # WeChat's "system busy, retry later"
# The platform refused for the window's sake: record as skipped, never retry.
_WINDOW_ERRORS = {WINDOW_CLOSED: "window_closed", QUOTA_USED: "window_quota_used"}
_HELD = frozenset(str(state) for state in HELD_STATES)


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


@dataclass(slots=True)
class ClaimedTouch:
    """What a claim reads once: fields no one but the lease holder changes after enqueueing."""

    id: int
    customer_id: int
    kind: str
    body: dict[str, Any]
    template: dict[str, Any] | None
    defer_when_capped: bool
    attempts: int


# ---- statements, built once ---------------------------------------------------------------

_t = cast(Table, Touch.__table__)
_c = cast(Table, Customer.__table__)
_v = cast(Table, Conversation.__table__)
_m = cast(Table, Message.__table__)
_when = _t.c.due_at.type
_PENDING = TouchStatus.PENDING.value

_CLAIM = (
    select(_t.c.id, _t.c.customer_id, _t.c.kind, _t.c.body, _t.c.template, _t.c.defer_when_capped, _t.c.attempts)
    .where(_t.c.status == _PENDING, _t.c.due_at <= bindparam("now", type_=_when),
           or_(_t.c.lease_until.is_(None), _t.c.lease_until < bindparam("now", type_=_when)))
    .order_by(_t.c.priority.desc(), _t.c.due_at, _t.c.id)
    .limit(bindparam("limit"))
)
_CLAIM_LOCKED = _CLAIM.with_for_update(skip_locked=True)
_LEASE = (update(_t).where(_t.c.id.in_(bindparam("ids", expanding=True)))
          .values(lease_until=bindparam("lease", type_=_when)))

# The customers' row locks come first (in id order, so two dispatchers never deadlock), as on
# the message path, which may cancel touches.
_LOCK_CUSTOMERS = (
    select(_c.c.id, _c.c.channel, _c.c.external_id, _c.c.subscribed, _c.c.timezone, _c.c.marketing_opt_out,
           _c.c.window_expires_at, _c.c.window_quota, _c.c.window_used)
    .where(_c.c.id.in_(bindparam("ids", expanding=True))).order_by(_c.c.id).with_for_update()
)
# Then the touches still ours: pending under our lease (a cancel committed first wins).
_LOCK_OURS = (
    select(_t.c.id).where(_t.c.id.in_(bindparam("ids", expanding=True)), _t.c.status == _PENDING,
                          _t.c.lease_until == bindparam("lease", type_=_when))
    .order_by(_t.c.id).with_for_update()
)
# Open conversations, newest first: staff hold one (queued or staff); the newest gets the transcript.
_OPEN_CONVERSATIONS = (
    select(_v.c.customer_id, _v.c.id, _v.c.state, _v.c.last_seq)
    .where(_v.c.customer_id.in_(bindparam("ids", expanding=True)), _v.c.state != "closed")
    .order_by(_v.c.id.desc())
)
_SENT_MARKETING = select(_t.c.customer_id, _t.c.sent_at).where(
    _t.c.customer_id.in_(bindparam("ids", expanding=True)), _t.c.status == TouchStatus.SENT.value,
    _t.c.kind == "marketing", _t.c.sent_at >= bindparam("since", type_=_when))

_FINISH = update(_t).where(_t.c.id == bindparam("touch_id")).values(
    status=bindparam("b_status"), reason=bindparam("b_reason"), lease_until=None,
    attempts=bindparam("b_attempts"), sent_at=bindparam("b_sent_at", type_=_when))
_RESCHEDULE = update(_t).where(_t.c.id == bindparam("touch_id")).values(
    status=_PENDING, due_at=bindparam("b_due", type_=_when), reason=bindparam("b_reason"), lease_until=None,
    attempts=bindparam("b_attempts"), sent_at=None)
_NEW_CONVERSATION = insert(_v).values(
    customer_id=bindparam("customer_id"), state="bot", last_seq=0, not_understood_streak=0,
    started_at=bindparam("b_now", type_=_when), updated_at=bindparam("b_now", type_=_when))
_SET_SEQ = update(_v).where(_v.c.id == bindparam("conversation_id")).values(last_seq=bindparam("b_seq"))
_TRANSCRIPT = insert(_m)
_UNDO_TRANSCRIPT = delete(_m).where(_m.c.conversation_id == bindparam("conversation_id"),
                                    _m.c.seq == bindparam("b_seq"))
_UNDO_CONVERSATION = delete(_v).where(_v.c.id == bindparam("conversation_id"))
_SET_WINDOW = update(_c).where(_c.c.id == bindparam("customer_id")).values(
    window_expires_at=bindparam("b_expires", type_=_when), window_quota=bindparam("b_quota"),
    window_used=bindparam("b_used"))
_SET_USED = update(_c).where(_c.c.id == bindparam("customer_id")).values(window_used=bindparam("b_used"))


def _engine(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError("touch dispatch needs a session factory bound to an AsyncEngine")
    return bind


# ---- claiming -------------------------------------------------------------------------------

async def claim_touches(engine: AsyncEngine, now: datetime, *, limit: int,
                        lease_seconds: float) -> tuple[list[ClaimedTouch], datetime]:
    """Lease up to `limit` due touches, in priority order; returns them and the lease.

    PostgreSQL and MySQL/MariaDB: FOR UPDATE SKIP LOCKED, so concurrent claimers get disjoint
    batches without waiting. SQLite has one writer (BEGIN IMMEDIATE), so one claimer at a time.
    The lease value doubles as a fencing token: a worker only writes a touch whose `lease_until`
    is still the one it set.
    """
    lease = now + timedelta(seconds=lease_seconds)
    async with engine.begin() as connection:
        query = _CLAIM if connection.dialect.name == "sqlite" else _CLAIM_LOCKED
        rows = (await connection.execute(query, {"now": now, "limit": limit})).all()
        claimed = [ClaimedTouch(*row) for row in rows]
        if claimed:
            await connection.execute(_LEASE, {"ids": [touch.id for touch in claimed], "lease": lease})
    return claimed, lease


async def claim_due_touches(sessions: async_sessionmaker[AsyncSession], now: datetime, *,
                            limit: int, lease_seconds: float) -> tuple[list[tuple[int, int]], datetime]:
    """Lease up to `limit` due touches; returns (touch id, customer id) pairs and the lease."""
    claimed, lease = await claim_touches(_engine(sessions), now, limit=limit, lease_seconds=lease_seconds)
    return [(touch.id, touch.customer_id) for touch in claimed], lease


# ---- dispatching ----------------------------------------------------------------------------

async def dispatch_due_touches(sessions: async_sessionmaker[AsyncSession], senders: Mapping[str, Sender],
                               settings: TouchPolicySettings, clock: Clock, worker_id: str) -> DispatchStats:
    """Claim and deliver due touches until none are left; one APScheduler job runs this."""
    engine = _engine(sessions)
    total = DispatchStats()
    concurrency = 1 if engine.dialect.name == "sqlite" else settings.concurrency
    while True:
        claimed, lease = await claim_touches(engine, clock.now(), limit=settings.batch_size,
                                             lease_seconds=settings.lease_seconds)
        if not claimed:
            break
        stats = DispatchStats(claimed=len(claimed))
        await _prepare(senders)
        await deliver_claimed(engine, senders, settings, clock, claimed, lease, stats, concurrency)
        log.debug("worker %s: %s", worker_id, stats)
        total.add(stats)
        if len(claimed) < settings.batch_size:
            break
    return total


async def deliver_claimed(engine: AsyncEngine, senders: Mapping[str, Sender], settings: TouchPolicySettings,
                          clock: Clock, claimed: Sequence[ClaimedTouch], lease: datetime, stats: DispatchStats,
                          concurrency: int = 1) -> None:
    """Deliver a claimed batch.

    Rounds keep one customer's touches in claim order: round n holds each customer's n-th touch.
    A round is cut into groups of at most GROUP_SIZE customers; each group is one transaction
    (customers locked together, policy inputs read with one statement each, writes batched), and
    `concurrency` groups run at once, each on its own connection.
    """
    rounds: list[list[ClaimedTouch]] = []
    seen: dict[int, int] = {}
    for touch in claimed:
        n = seen.get(touch.customer_id, 0)
        seen[touch.customer_id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(touch)
    gate = asyncio.Semaphore(concurrency)

    async def _run(group: list[ClaimedTouch]) -> None:
        async with gate:
            await _deliver_group(engine, senders, settings, clock, group, lease, stats)

    for touches in rounds:
        size = max(1, min(GROUP_SIZE, -(-len(touches) // concurrency)))
        await asyncio.gather(*(_run(touches[first:first + size]) for first in range(0, len(touches), size)))


GROUP_SIZE = 50  # touches (of different customers) per transaction


async def _prepare(senders: Mapping[str, Sender]) -> None:
    """Let senders refresh credentials (the access token is stored in the database) before we
    hold a transaction: on SQLite the single connection would otherwise wait for itself."""
    for sender in senders.values():
        prepare = getattr(sender, "prepare", None)
        if prepare is not None:
            try:
                await prepare()
            except Exception:
                log.warning("could not prepare %s", type(sender).__name__, exc_info=True)


@dataclass(slots=True)
class _Sending:
    """A touch marked sent in the open transaction, and what undoes that if the platform refuses."""

    touch: ClaimedTouch
    customer: Any
    via_template: bool
    conversation_id: int
    seq: int
    new_conversation: bool


async def _deliver_group(engine: AsyncEngine, senders: Mapping[str, Sender], settings: TouchPolicySettings,
                         clock: Clock, touches: Sequence[ClaimedTouch], lease: datetime,
                         stats: DispatchStats) -> None:
    """Touches of different customers in one transaction; it commits once the platform answered
    every one of them (the calls run concurrently)."""
    counts = DispatchStats()
    try:
        async with engine.begin() as connection:
            await _deliver_locked(connection, senders, settings, clock, touches, lease, counts)
    except Exception:
        stats.errors += len(touches)
        log.exception("%d touches: dispatch failed; they are retried after their lease", len(touches))
        return
    stats.add(counts)


async def _deliver_locked(connection: AsyncConnection, senders: Mapping[str, Sender],
                          settings: TouchPolicySettings, clock: Clock, touches: Sequence[ClaimedTouch],
                          lease: datetime, stats: DispatchStats) -> None:
    customer_ids = sorted({touch.customer_id for touch in touches})
    customers = {row.id: row for row in await connection.execute(_LOCK_CUSTOMERS, {"ids": customer_ids})}
    ours = set((await connection.execute(
        _LOCK_OURS, {"ids": [touch.id for touch in touches], "lease": lease})).scalars())
    now = clock.now()
    conversations: dict[int, list[Any]] = {}
    for row in await connection.execute(_OPEN_CONVERSATIONS, {"ids": customer_ids}):
        conversations.setdefault(row.customer_id, []).append(row)
    sent = await _sent_counts(connection, [touch for touch in touches if touch.id in ours],
                              customers, now, settings)
    finished: list[dict[str, Any]] = []
    rescheduled: list[dict[str, Any]] = []
    sending: list[_Sending] = []
    for touch in touches:
        if touch.id not in ours:
            stats.dropped += 1
            continue
        customer = customers[touch.customer_id]
        open_ = conversations.get(touch.customer_id, [])
        decision = decide(touch, customer, now=now, settings=settings,  # type: ignore[arg-type]
                          held_by_staff=any(row.state in _HELD for row in open_),
                          sent=sent.get(touch.customer_id, SentCounts()))
        if decision.action is Action.SKIP:
            finished.append(_finished(touch, TouchStatus.SKIPPED, decision.reason, touch.attempts))
            stats.skipped += 1
        elif decision.action is Action.DEFER:
            assert decision.until is not None
            rescheduled.append({"touch_id": touch.id, "b_due": decision.until, "b_attempts": touch.attempts,
                                "b_reason": f"deferred: {decision.reason}"})
            stats.deferred += 1
        elif customer.channel not in senders:
            finished.append(_finished(touch, TouchStatus.FAILED, f"channel {customer.channel} cannot push messages",
                                      touch.attempts))
            stats.failed += 1
        else:
            via_template = decision.action is Action.TEMPLATE
            if open_:
                conversation_id, seq, new = open_[0].id, open_[0].last_seq + 1, False
            else:
                started = await connection.execute(_NEW_CONVERSATION, {"customer_id": touch.customer_id,
                                                                       "b_now": now})
                key = started.inserted_primary_key
                assert key is not None
                conversation_id, seq, new = key[0], 1, True
            # Record success first; the platform calls come last, so the commit follows WeChat's
            # "ok" as closely as possible. A refused call is undone below, locks still held.
            sending.append(_Sending(touch, customer, via_template, conversation_id, seq, new))
            finished.append(_finished(touch, TouchStatus.SENT, f"template: {decision.reason}" if via_template
                                      else None, touch.attempts + 1, now))
    await _executemany(connection, _FINISH, finished)
    await _executemany(connection, _RESCHEDULE, rescheduled)
    if not sending:
        return
    await _executemany(connection, _SET_SEQ, [{"conversation_id": s.conversation_id, "b_seq": s.seq}
                                              for s in sending])
    await _executemany(connection, _TRANSCRIPT, [_transcript_row(s, now) for s in sending])
    await _executemany(connection, _SET_USED, [
        {"customer_id": s.touch.customer_id, "b_used": s.customer.window_used + 1}
        for s in sending if not s.via_template])
    results = await asyncio.gather(
        *(_call(senders[s.customer.channel], s.customer.external_id, s.touch, s.via_template) for s in sending),
        return_exceptions=True)
    failures = [(s, result) for s, result in zip(sending, results, strict=True) if isinstance(result, BaseException)]
    for s, result in zip(sending, results, strict=True):
        if not isinstance(result, BaseException):
            stats.sent += 1
            stats.templates += s.via_template
    if failures:
        await _undo(connection, settings, failures, clock.now(), stats)


def _finished(touch: ClaimedTouch, status: TouchStatus, reason: str | None, attempts: int,
              sent_at: datetime | None = None) -> dict[str, Any]:
    return {"touch_id": touch.id, "b_status": status.value, "b_reason": reason, "b_attempts": attempts,
            "b_sent_at": sent_at}


def _transcript_row(sending: _Sending, now: datetime) -> dict[str, Any]:
    touch, via_template = sending.touch, sending.via_template
    return {
        "conversation_id": sending.conversation_id, "customer_id": touch.customer_id, "seq": sending.seq,
        "channel": sending.customer.channel, "direction": "out",
        "kind": "template" if via_template else touch.body["type"],
        "text": transcript_text(touch, via_template), "delivery": "push",
        "payload": {"touch_id": touch.id, "source": "touch", "touch_kind": touch.kind,
                    **({"template": touch.template} if via_template else {"body": touch.body})},
        "created_at": now, "platform_msg_id": None, "reply_to_id": None, "intent": None,
    }


async def _executemany(connection: AsyncConnection, statement: Any, rows: list[dict[str, Any]]) -> None:
    if len(rows) == 1:
        await connection.execute(statement, rows[0])
    elif rows:
        await connection.execute(statement, rows)


async def _sent_counts(connection: AsyncConnection, touches: Sequence[ClaimedTouch],
                       customers: Mapping[int, Any], now: datetime,
                       settings: TouchPolicySettings) -> dict[int, SentCounts]:
    """Marketing touches already sent in each customer's local day and week, one statement."""
    periods = {}
    for touch in touches:
        if touch.kind == "marketing" and touch.customer_id not in periods:
            zone = customer_zone(customers[touch.customer_id], settings)  # type: ignore[arg-type]
            day, _, week, _ = period_starts(now, zone)
            periods[touch.customer_id] = (day, min(day, week))
    if not periods:
        return {}
    since = min(start for _, start in periods.values())
    found: dict[int, list[datetime]] = {}
    for row in await connection.execute(_SENT_MARKETING, {"ids": sorted(periods), "since": since}):
        found.setdefault(row.customer_id, []).append(row.sent_at)
    counts = {}
    for customer_id, (day, start) in periods.items():
        times = [at for at in found.get(customer_id, ()) if at >= start]
        counts[customer_id] = SentCounts(today=sum(1 for at in times if at >= day), this_week=len(times))
    return counts


async def _undo(connection: AsyncConnection, settings: TouchPolicySettings,
                failures: Sequence[tuple[_Sending, BaseException]], now: datetime, stats: DispatchStats) -> None:
    """The platform refused: take back the transcript row, the sequence number and the window
    count (we still hold the locks, so nothing else moved them), then skip, retry or fail."""
    await _executemany(connection, _UNDO_TRANSCRIPT, [
        {"conversation_id": s.conversation_id, "b_seq": s.seq} for s, _ in failures])
    await _executemany(connection, _UNDO_CONVERSATION, [
        {"conversation_id": s.conversation_id} for s, _ in failures if s.new_conversation])
    await _executemany(connection, _SET_SEQ, [
        {"conversation_id": s.conversation_id, "b_seq": s.seq - 1} for s, _ in failures if not s.new_conversation])
    windows: list[dict[str, Any]] = []
    finished: list[dict[str, Any]] = []
    rescheduled: list[dict[str, Any]] = []
    for s, error in failures:
        touch, customer, attempts = s.touch, s.customer, s.touch.attempts + 1
        window = {"customer_id": touch.customer_id, "b_expires": customer.window_expires_at,
                  "b_quota": customer.window_quota, "b_used": customer.window_used}
        code = error.code if isinstance(error, DeliveryError) else None
        if code in _WINDOW_ERRORS:
            # WeChat disagrees with our count: believe it, and don't knock again.
            if code == WINDOW_CLOSED:
                window.update(b_expires=None, b_quota=0, b_used=0)
            else:
                window["b_used"] = max(customer.window_quota, customer.window_used)
            windows.append(window)
            finished.append(_finished(touch, TouchStatus.SKIPPED, f"{_WINDOW_ERRORS[code]} ({code})", attempts))
            stats.skipped += 1
            continue
        if not s.via_template:
            windows.append(window)
        reason = error.reason if isinstance(error, DeliveryError) else f"{type(error).__name__}: {error}".rstrip(": ")
        permanent = isinstance(error, DeliveryError) and code != SYSTEM_BUSY
        if permanent or attempts >= settings.max_attempts:
            finished.append(_finished(touch, TouchStatus.FAILED, reason, attempts))
            stats.failed += 1
            log.warning("touch %s to %s failed after %d attempts: %s", touch.id, mask(customer.external_id),
                        attempts, reason)
            continue
        delay = min(settings.backoff_seconds * 2 ** (attempts - 1), settings.backoff_max_seconds)
        rescheduled.append({"touch_id": touch.id, "b_due": now + timedelta(seconds=delay), "b_attempts": attempts,
                            "b_reason": f"retrying: {reason}"})
        stats.retried += 1
    await _executemany(connection, _SET_WINDOW, windows)
    await _executemany(connection, _FINISH, finished)
    await _executemany(connection, _RESCHEDULE, rescheduled)


async def _call(sender: Sender, user_id: str, touch: ClaimedTouch, via_template: bool) -> None:
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


def transcript_text(touch: ClaimedTouch | Touch, via_template: bool) -> str:
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
