"""Send due touches: claim a batch under a lease, re-check the policy, call the platform, record.

Each group of touches takes two short transactions around its platform calls, so no customer's
row stays locked while WeChat answers (a slow call would otherwise hold up that customer's own
messages for up to the call's timeout):

1. check: under the customers' row locks, the touches still ours are re-checked (consent, staff
   hold, quiet hours, caps, window); those to send become `sending` with their window count
   reserved, the others are recorded skipped, deferred or failed. Commit.
2. call the platform, concurrently, holding no lock and no connection.
3. record: under the customers' row locks again, a sent touch becomes `sent` with its transcript
   row; a refused one gets its window reservation back and is skipped, retried or failed. Commit.

Delivery stays at-least-once with the smallest gap we can make. A worker that dies before the
platform accepted a message loses nothing: its `sending` touches are retaken when the lease runs
out and checked again. Only a death between WeChat's "ok" and the record's COMMIT sends a touch
twice. (Marking touches `sent` before the call would lose them in that gap instead, and a lost
order notice is worse than a rare repeated one.) A `sending` touch counts against the caps and
cannot be cancelled: its checks passed before the cancel arrived, as with a message already out.

Throughput: the claim reads everything that never changes after enqueueing (kind, body,
template, attempts — only the lease holder changes those). Touches of up to GROUP_SIZE different
customers share each transaction: customers locked in id order, policy inputs read with one
statement each, writes as one statement over the group or one executemany (lists of ids travel as
one array on PostgreSQL). Up to `[touches] concurrency` platform calls are in flight while the next
group checks; one customer's touches go in claim order, one per group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, any_, bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from bot.channels.base import (
    Delivery,
    DeliveryResult,
    OutboundMessage,
    Sender,
    body_message,
    send_once,
    template_message,
)
from bot.clock import Clock
from bot.outbox.outbox import WindowState, window_after_refusal
from bot.outbox.policy import (
    Action,
    SentCounts,
    TouchPolicySettings,
    customer_zone,
    decide,
    period_starts,
)
from flows.handoff import HELD_STATES
from storage.models import Conversation, Customer, Touch
from storage.outgoing import Outgoing, append_outgoing
from storage.privacy import error_text, mask, redact
from storage.touches import TouchStatus

log = logging.getLogger(__name__)

# The platform refused for the window's sake: record as skipped, never retry.
_WINDOW_OUTCOMES = frozenset({Delivery.WINDOW_CLOSED, Delivery.QUOTA_USED})
_HELD = frozenset(str(state) for state in HELD_STATES)
GROUP_SIZE = 100  # touches (of different customers) per transaction


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


@dataclass(slots=True)
class _Sending:
    """A touch checked and committed as `sending`, and what its record needs after the call."""

    touch: ClaimedTouch
    channel: str
    external_id: str
    via_template: bool  # a template needs no window, so it took no count
    window_seen: datetime | None  # the customer's window when checked


# ---- statements, built once ---------------------------------------------------------------

_t = cast(Table, Touch.__table__)
_c = cast(Table, Customer.__table__)
_v = cast(Table, Conversation.__table__)
_when = _t.c.due_at.type
_PENDING = TouchStatus.PENDING.value
_SENDING = TouchStatus.SENDING.value

# Due pending touches, and `sending` ones whose worker died mid-call (their lease ran out).
_CLAIM = (
    select(_t.c.id, _t.c.customer_id, _t.c.kind, _t.c.body, _t.c.template, _t.c.defer_when_capped, _t.c.attempts)
    .where(or_(and_(_t.c.status == _PENDING, _t.c.due_at <= bindparam("now", type_=_when)), _t.c.status == _SENDING),
           or_(_t.c.lease_until.is_(None), _t.c.lease_until < bindparam("now", type_=_when)))
    .order_by(_t.c.priority.desc(), _t.c.due_at, _t.c.id)
    .limit(bindparam("limit"))
)
_CLAIM_LOCKED = _CLAIM.with_for_update(skip_locked=True)
_FINISH = update(_t).where(_t.c.id == bindparam("touch_id")).values(
    status=bindparam("b_status"), reason=bindparam("b_reason"), lease_until=None,
    attempts=bindparam("b_attempts"), sent_at=None)
_RESCHEDULE = update(_t).where(_t.c.id == bindparam("touch_id")).values(
    status=_PENDING, due_at=bindparam("b_due", type_=_when), reason=bindparam("b_reason"), lease_until=None,
    attempts=bindparam("b_attempts"), sent_at=None)
_NEW_CONVERSATION = insert(_v).values(
    customer_id=bindparam("customer_id"), state="bot", last_seq=0, not_understood_streak=0,
    started_at=bindparam("b_now", type_=_when), updated_at=bindparam("b_now", type_=_when))
_SET_WINDOW = update(_c).where(_c.c.id == bindparam("customer_id")).values(
    window_expires_at=bindparam("b_expires", type_=_when), window_quota=bindparam("b_quota"),
    window_used=bindparam("b_used"))

Among = Callable[[Any, str], Any]  # (column, parameter name) → "column is one of the list"


def _in_list(column: Any, name: str) -> Any:
    return column.in_(bindparam(name, expanding=True))


def _any_of(column: Any, name: str) -> Any:
    # One array parameter: an expanding IN is re-rendered, a cast per element, on every execution.
    return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))


@dataclass(frozen=True, slots=True)
class _Statements:
    """The statements that take lists of ids, in the form each backend runs best."""

    lease: Any
    lock_customers: Any
    lock_ours: Any
    open_conversations: Any
    sent_marketing: Any
    mark_sending: Any
    reserve: Any
    mark_sent: Any

    @classmethod
    def build(cls, among: Among) -> _Statements:
        return cls(
            lease=update(_t).where(among(_t.c.id, "ids")).values(lease_until=bindparam("lease", type_=_when)),
            # The customers' row locks come first (in id order, so two dispatchers never deadlock),
            # as on the message path, which may cancel touches and appends to the same conversations.
            lock_customers=(
                select(_c.c.id, _c.c.channel, _c.c.external_id, _c.c.subscribed, _c.c.timezone,
                       _c.c.marketing_opt_out, _c.c.window_expires_at, _c.c.window_quota, _c.c.window_used)
                .where(among(_c.c.id, "ids")).order_by(_c.c.id).with_for_update()),
            # Then the touches still ours, in the state the phase expects (a cancel committed first wins).
            lock_ours=(
                select(_t.c.id).where(among(_t.c.id, "ids"), among(_t.c.status, "statuses"),
                                      _t.c.lease_until == bindparam("lease", type_=_when))
                .order_by(_t.c.id).with_for_update()),
            # Open conversations, newest first: staff hold one (queued or staff); the newest gets
            # the transcript.
            open_conversations=(
                select(_v.c.customer_id, _v.c.id, _v.c.state, _v.c.last_seq)
                .where(among(_v.c.customer_id, "ids"), _v.c.state != "closed").order_by(_v.c.id.desc())),
            # Marketing touches sent, or under way elsewhere, since the start of the customers'
            # day or week; the touches being checked do not count themselves.
            sent_marketing=select(_t.c.customer_id, _t.c.sent_at).where(
                among(_t.c.customer_id, "ids"), _t.c.status.in_([TouchStatus.SENT.value, _SENDING]),
                _t.c.kind == "marketing", _t.c.sent_at >= bindparam("since", type_=_when),
                ~among(_t.c.id, "checking")),
            mark_sending=update(_t).where(among(_t.c.id, "ids")).values(
                status=_SENDING, reason=bindparam("reason"), sent_at=bindparam("now", type_=_when),
                lease_until=bindparam("lease", type_=_when)),
            reserve=update(_c).where(among(_c.c.id, "ids")).values(window_used=_c.c.window_used + 1),
            mark_sent=update(_t).where(among(_t.c.id, "ids")).values(
                status=TouchStatus.SENT.value, lease_until=None, attempts=_t.c.attempts + 1),
        )


_POSTGRESQL = _Statements.build(_any_of)
_PORTABLE = _Statements.build(_in_list)


def _sql(connection: AsyncConnection) -> _Statements:
    return _POSTGRESQL if connection.dialect.name == "postgresql" else _PORTABLE


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
            await connection.execute(_sql(connection).lease, {"ids": [touch.id for touch in claimed], "lease": lease})
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
    while True:
        claimed, lease = await claim_touches(engine, clock.now(), limit=settings.batch_size,
                                             lease_seconds=settings.lease_seconds)
        if not claimed:
            break
        stats = DispatchStats(claimed=len(claimed))
        await _prepare(senders)
        await deliver_claimed(engine, senders, settings, clock, claimed, lease, stats, settings.concurrency)
        log.debug("worker %s: %s", worker_id, stats)
        total.add(stats)
        if len(claimed) < settings.batch_size:
            break
    return total


async def deliver_claimed(engine: AsyncEngine, senders: Mapping[str, Sender], settings: TouchPolicySettings,
                          clock: Clock, claimed: Sequence[ClaimedTouch], lease: datetime, stats: DispatchStats,
                          concurrency: int = 1) -> None:
    """Deliver a claimed batch with up to `concurrency` platform calls in flight.

    Rounds keep one customer's touches in claim order: round n holds each customer's n-th touch.
    A round is cut into groups of at most GROUP_SIZE customers. A group holds a connection only
    while it checks and while it records, so the next group checks while this one's calls are in
    flight, and the calls never wait for the database (on SQLite's one connection neither).
    """
    rounds: list[list[ClaimedTouch]] = []
    seen: dict[int, int] = {}
    for touch in claimed:
        n = seen.get(touch.customer_id, 0)
        seen[touch.customer_id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(touch)
    calls = asyncio.Semaphore(concurrency)
    groups = asyncio.Semaphore(-(-concurrency // GROUP_SIZE) + 1)

    async def _run(group: list[ClaimedTouch]) -> None:
        async with groups:
            await _deliver_group(engine, senders, settings, clock, group, lease, stats, calls)

    for touches in rounds:
        await asyncio.gather(*(_run(touches[first:first + GROUP_SIZE])
                               for first in range(0, len(touches), GROUP_SIZE)))


async def _prepare(senders: Mapping[str, Sender]) -> None:
    """Let senders refresh credentials (the access token is stored in the database) before the
    calls, so a batch does not start with every call waiting for one token."""
    for sender in senders.values():
        try:
            await sender.prepare()
        except Exception:
            log.warning("could not prepare %s", type(sender).__name__, exc_info=True)


async def _deliver_group(engine: AsyncEngine, senders: Mapping[str, Sender], settings: TouchPolicySettings,
                         clock: Clock, touches: Sequence[ClaimedTouch], lease: datetime,
                         stats: DispatchStats, calls: asyncio.Semaphore) -> None:
    """Check and commit, call with no lock held, record and commit."""
    counts = DispatchStats()
    try:
        async with engine.begin() as connection:
            sending, lease = await _check(connection, senders, settings, clock, touches, lease, counts)
    except Exception:
        stats.errors += len(touches)
        log.exception("%d touches: dispatch failed; they are retried after their lease", len(touches))
        return
    stats.add(counts)
    if not sending:
        return

    async def _gated(s: _Sending) -> DeliveryResult:
        async with calls:
            return await _call(senders[s.channel], s.external_id, s.touch, s.via_template)

    results = await asyncio.gather(*(_gated(s) for s in sending), return_exceptions=True)
    counts = DispatchStats()
    try:
        async with engine.begin() as connection:
            await _record(connection, settings, clock.now(), lease, sending, results, counts)
    except Exception:
        stats.errors += len(sending)
        log.exception("%d touches: the platform answered but the outcome was not stored; they are "
                      "checked and sent again after their lease", len(sending))
        return
    stats.add(counts)


async def _check(connection: AsyncConnection, senders: Mapping[str, Sender], settings: TouchPolicySettings,
                 clock: Clock, touches: Sequence[ClaimedTouch], lease: datetime,
                 stats: DispatchStats) -> tuple[list[_Sending], datetime]:
    """Phase 1, under the customers' locks: decide each touch; mark those to send `sending`.

    They get a fresh lease (returned): the time a batch waited for its turn does not count
    against the call, so no other worker retakes a touch whose call is still under way.
    """
    customers, ours = await _lock(connection, touches, [_PENDING, _SENDING], lease)
    customer_ids = sorted(customers)
    now = clock.now()
    fresh = now + timedelta(seconds=settings.lease_seconds)
    held = {row.customer_id for row in await connection.execute(_sql(connection).open_conversations, {"ids": customer_ids})
            if row.state in _HELD}
    sent = await _sent_counts(connection, [touch for touch in touches if touch.id in ours], customers, now, settings)
    finished: list[dict[str, Any]] = []
    rescheduled: list[dict[str, Any]] = []
    marked: dict[str | None, list[int]] = {}  # reason → touches to send
    sending: list[_Sending] = []
    for touch in touches:
        if touch.id not in ours:
            stats.dropped += 1
            continue
        customer = customers[touch.customer_id]
        sender = senders.get(customer.channel)
        decision = decide(touch, customer, now=now, settings=settings,  # type: ignore[arg-type]
                          held_by_staff=touch.customer_id in held, sent=sent.get(touch.customer_id, SentCounts()),
                          capabilities=sender.capabilities if sender is not None else None)
        if decision.action is Action.SKIP:
            finished.append(_finished(touch, TouchStatus.SKIPPED, decision.reason, touch.attempts))
            stats.skipped += 1
        elif decision.action is Action.DEFER:
            assert decision.until is not None
            rescheduled.append(_rescheduled(touch, decision.until, f"deferred: {decision.reason}", touch.attempts))
            stats.deferred += 1
        elif sender is None:
            finished.append(_finished(touch, TouchStatus.FAILED, f"channel {customer.channel} cannot push messages",
                                      touch.attempts))
            stats.failed += 1
        else:
            via_template = decision.action is Action.TEMPLATE
            sending.append(_Sending(touch, customer.channel, customer.external_id, via_template,
                                    customer.window_expires_at))
            marked.setdefault(f"template: {decision.reason}" if via_template else None, []).append(touch.id)
    await _executemany(connection, _FINISH, finished)
    await _executemany(connection, _RESCHEDULE, rescheduled)
    for reason, ids in marked.items():  # one statement, or one per template-fallback reason
        await connection.execute(_sql(connection).mark_sending, {"ids": ids, "reason": reason, "now": now, "lease": fresh})
    # The window count is taken now, so a second worker's check sees it; a refusal gives it back.
    # (A touch retaken after its worker died takes it again: we may under-use a window, never overrun it.)
    reserved = [s.touch.customer_id for s in sending if not s.via_template]
    if reserved:
        await connection.execute(_sql(connection).reserve, {"ids": reserved})
    return sending, fresh


async def _lock(connection: AsyncConnection, touches: Sequence[ClaimedTouch], statuses: list[str],
                lease: datetime) -> tuple[dict[int, Any], set[int]]:
    """Lock the touches' customers, then those of the touches still ours in one of `statuses`
    (see _Statements); returns the customers' rows by id and the ids of the touches ours."""
    sql = _sql(connection)
    customer_ids = sorted({touch.customer_id for touch in touches})
    customers = {row.id: row for row in await connection.execute(sql.lock_customers, {"ids": customer_ids})}
    ours = set((await connection.execute(sql.lock_ours, {
        "ids": [touch.id for touch in touches], "statuses": statuses, "lease": lease})).scalars())
    return customers, ours


async def _record(connection: AsyncConnection, settings: TouchPolicySettings, now: datetime, lease: datetime,
                  sending: Sequence[_Sending], results: Sequence[DeliveryResult | BaseException],
                  stats: DispatchStats) -> None:
    """Phase 3, under the customers' locks again: sent touches get their transcript rows; refused
    ones their window count back, and are skipped, retried or failed."""
    customers, ours = await _lock(connection, [s.touch for s in sending], [_SENDING], lease)
    delivered: list[_Sending] = []
    failures: list[tuple[_Sending, DeliveryResult]] = []
    for s, result in zip(sending, results, strict=True):
        if isinstance(result, BaseException):
            # The sender broke its promise to answer with a result: treat it as passing.
            result = DeliveryResult(Delivery.RETRY_LATER, error_text(result))
        if s.touch.id not in ours:
            stats.dropped += 1  # our lease ran out mid-call and another worker took the touch
        elif result.sent:
            delivered.append(s)
        else:
            failures.append((s, result))
    if delivered:
        await _transcribe(connection, now, delivered)
        await connection.execute(_sql(connection).mark_sent, {"ids": [s.touch.id for s in delivered]})
        stats.sent += len(delivered)
        stats.templates += sum(s.via_template for s in delivered)
    if failures:
        await _refused(connection, settings, now, customers, failures, stats)


async def _transcribe(connection: AsyncConnection, now: datetime, delivered: Sequence[_Sending]) -> None:
    """One outgoing transcript row per delivered touch, in the customer's newest open conversation."""
    ids = sorted({s.touch.customer_id for s in delivered})
    newest: dict[int, int] = {}
    for row in await connection.execute(_sql(connection).open_conversations, {"ids": ids}):
        newest.setdefault(row.customer_id, row.id)
    missing = [customer_id for customer_id in ids if customer_id not in newest]
    if missing:
        await _executemany(connection, _NEW_CONVERSATION, [{"customer_id": i, "b_now": now} for i in missing])
        for row in await connection.execute(_sql(connection).open_conversations, {"ids": missing}):
            newest.setdefault(row.customer_id, row.id)
    await append_outgoing(connection, [_transcript_row(s, newest[s.touch.customer_id], now) for s in delivered])


async def _refused(connection: AsyncConnection, settings: TouchPolicySettings, now: datetime,
                   customers: Mapping[int, Any], failures: Sequence[tuple[_Sending, DeliveryResult]],
                   stats: DispatchStats) -> None:
    """The platform refused: give the window count back, then skip, retry or fail (see
    `window_after_refusal` for the window)."""
    windows: list[dict[str, Any]] = []
    finished: list[dict[str, Any]] = []
    rescheduled: list[dict[str, Any]] = []
    for s, result in failures:
        touch, customer, attempts = s.touch, customers[s.touch.customer_id], s.touch.attempts + 1
        current = WindowState(customer.window_expires_at, customer.window_quota, customer.window_used)
        window = window_after_refusal(current, s.window_seen, not s.via_template, result.outcome)
        if window is not None:
            windows.append({"customer_id": touch.customer_id, "b_expires": window.expires_at,
                            "b_quota": window.quota, "b_used": window.used})
        reason = redact(result.record())  # stored and logged: never with a URL's credentials
        if result.outcome in _WINDOW_OUTCOMES:
            # The platform disagrees with our count: believe it, and don't knock again.
            finished.append(_finished(touch, TouchStatus.SKIPPED, reason, attempts))
            stats.skipped += 1
            continue
        if result.outcome is not Delivery.RETRY_LATER or attempts >= settings.max_attempts:
            finished.append(_finished(touch, TouchStatus.FAILED, reason, attempts))
            stats.failed += 1
            log.warning("touch %s to %s failed after %d attempts: %s", touch.id, mask(s.external_id),
                        attempts, reason)
            continue
        delay = min(settings.backoff_seconds * 2 ** (attempts - 1), settings.backoff_max_seconds)
        rescheduled.append(_rescheduled(touch, now + timedelta(seconds=delay), f"retrying: {reason}", attempts))
        stats.retried += 1
    await _executemany(connection, _SET_WINDOW, windows)
    await _executemany(connection, _FINISH, finished)
    await _executemany(connection, _RESCHEDULE, rescheduled)


def _finished(touch: ClaimedTouch, status: TouchStatus, reason: str | None, attempts: int) -> dict[str, Any]:
    return {"touch_id": touch.id, "b_status": status.value, "b_reason": reason, "b_attempts": attempts}


def _rescheduled(touch: ClaimedTouch, due: datetime, reason: str, attempts: int) -> dict[str, Any]:
    return {"touch_id": touch.id, "b_due": due, "b_reason": reason, "b_attempts": attempts}


def _transcript_row(sending: _Sending, conversation_id: int, now: datetime) -> Outgoing:
    touch, via_template = sending.touch, sending.via_template
    return Outgoing(
        conversation_id=conversation_id, customer_id=touch.customer_id, channel=sending.channel,
        kind="template" if via_template else touch.body["type"], text=transcript_text(touch, via_template),
        delivery="push", created_at=now,
        payload={"touch_id": touch.id, "source": "touch", "touch_kind": touch.kind,
                 **({"template": touch.template} if via_template else {"body": touch.body})},
    )


async def _executemany(connection: AsyncConnection, statement: Any, rows: list[dict[str, Any]]) -> None:
    if len(rows) == 1:
        await connection.execute(statement, rows[0])
    elif rows:
        await connection.execute(statement, rows)


async def _sent_counts(connection: AsyncConnection, touches: Sequence[ClaimedTouch],
                       customers: Mapping[int, Any], now: datetime,
                       settings: TouchPolicySettings) -> dict[int, SentCounts]:
    """Marketing touches already sent (or under way) in each customer's local day and week, one
    statement; the touches being checked do not count themselves."""
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
    parameters = {"ids": sorted(periods), "since": since, "checking": [touch.id for touch in touches]}
    for row in await connection.execute(_sql(connection).sent_marketing, parameters):
        found.setdefault(row.customer_id, []).append(row.sent_at)
    counts = {}
    for customer_id, (day, start) in periods.items():
        times = [at for at in found.get(customer_id, ()) if at >= start]
        counts[customer_id] = SentCounts(today=sum(1 for at in times if at >= day), this_week=len(times))
    return counts


async def _call(sender: Sender, user_id: str, touch: ClaimedTouch, via_template: bool) -> DeliveryResult:
    return await send_once(sender, user_id, touch_message(touch, via_template), f"siyu-t{touch.id}")


def touch_message(touch: ClaimedTouch | Touch, via_template: bool) -> OutboundMessage:
    """What a touch sends: its body, or outside the window its template."""
    if via_template:
        assert touch.template is not None
        return template_message(touch.template)
    return body_message(touch.body)


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
