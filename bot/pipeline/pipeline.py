"""One path for every inbound: deduplicate → lock the customer → store → route → store the answer.

The customer lock is taken before any state is read, so two messages of one customer never
see the same conversation state; retries are recognised by the unique platform message id.

On SQLite (one writer) messages are committed in groups: one writer task takes every message
waiting, runs each in arrival order inside ONE transaction and commits once, so the statements
and the commit are shared instead of paid per message. A group that fails for any reason (a
retry's duplicate platform id, say) is rolled back and its messages run again one at a time, so
one bad message never fails the others. PostgreSQL and MariaDB keep one transaction per message:
many connections and the customer's row lock already let messages proceed side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.pipeline.customer_locks import CustomerLocks
from bot.pipeline.outcome import Outcome
from flows import runs
from flows.turn import Stage, Turn
from flows.variables import DEFAULT_NICKNAME
from handlers.messages import EventKind, Inbound, InboundKind, Reply
from handlers.router import Router
from storage import conversations as store
from storage.changed_rows import write_changed
from storage.db import is_retryable
from storage.models import Conversation, Customer, Message
from storage.privacy import mask
from storage.warm_rows import WarmRows

log = logging.getLogger(__name__)

_ATTEMPTS = 3
# Messages accepted but not answered yet (waiting for their customer, queued or being stored).
# Beyond this the pipeline refuses new ones at once instead of letting the backlog, and every
# caller's wait, grow without limit; the platform delivers them again later.
MAX_IN_FLIGHT = 2000
# Messages per group commit: large enough to share the work, small enough that one group's
# transaction stays a few milliseconds.
MAX_BATCH = 64
# While busy, a group smaller than this waits up to GATHER_SECONDS for more (see Pipeline._gather).
GATHER_TARGET = 8
GATHER_SECONDS = 0.008


class PipelineOverloaded(Exception):
    """More messages are waiting than the pipeline takes on; nothing of this one was stored."""


@dataclass
class PipelineStats:
    handled: int = 0
    duplicates: int = 0
    not_understood: int = 0
    batches: int = 0  # group commits (SQLite)
    batch_fallbacks: int = 0  # groups rolled back and run again one message at a time
    overloaded: int = 0


@dataclass
class _Done:
    outcome: Outcome
    after_commit: list[Callable[[], Awaitable[None]]]


_Waiting = tuple[Inbound, "asyncio.Future[_Done]"]


class Pipeline:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], router: Router, clock: Clock,
                 stages: Sequence[Stage] = (), *, group_commit: bool | None = None,
                 max_in_flight: int = MAX_IN_FLIGHT, max_batch: int = MAX_BATCH):
        self._sessions = sessions
        self._router = router
        self._clock = clock
        self._stages = list(stages)
        self._locks = CustomerLocks()
        self.stats = PipelineStats()
        if group_commit is None:
            bind = sessions.kw.get("bind")
            group_commit = bind is not None and bind.dialect.name == "sqlite"
        self._group_commit = group_commit
        self.max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._in_flight = 0
        self._queue: list[_Waiting] = []
        # The group writer's session and rows, kept between its transactions.
        self._warm = WarmRows(sessions)
        self._writer: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()  # started messages' after-commit work
        self._gathered: asyncio.Future[None] | None = None  # the writer waits for a group to grow

    @property
    def overloaded(self) -> bool:
        """Whether `handle` would refuse a message now (a channel may answer before parsing further)."""
        return self._in_flight >= self.max_in_flight

    async def handle(self, inbound: Inbound) -> Outcome:
        """Handle one message and wait for its outcome."""
        self._admit()
        try:
            async with self._locks.hold((inbound.channel, inbound.user_id)):
                done = await (self._through_group(inbound) if self._group_commit else self._handle_one(inbound))
                for work in done.after_commit:
                    await work()
                return done.outcome
        finally:
            self._in_flight -= 1

    def start(self, inbound: Inbound) -> asyncio.Future[Outcome]:
        """Begin handling one message; its outcome arrives in the future, waited for or not.

        For a caller that may stop waiting (a callback's reply deadline) while the work goes on.
        The usual case on SQLite, a customer with nothing else in flight, joins the next group
        with no task of its own: a task per message costs more than queuing it does.
        """
        key = (inbound.channel, inbound.user_id)
        if not self._group_commit or self.overloaded or not self._locks.try_take(key):
            return asyncio.ensure_future(self.handle(inbound))
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[_Done] = loop.create_future()
        outcome: asyncio.Future[Outcome] = loop.create_future()
        stored.add_done_callback(partial(self._started_stored, key, outcome))
        self._enqueue(inbound, stored)
        return outcome

    def _started_stored(self, key: tuple[str, str], outcome: asyncio.Future[Outcome],
                        stored: asyncio.Future[_Done]) -> None:
        """A started message's group committed (or failed): run its after-commit work, if any,
        then settle its outcome and free its customer."""
        if stored.cancelled():
            self._finish_started(key, outcome, error=asyncio.CancelledError())
        elif (error := stored.exception()) is not None:
            self._finish_started(key, outcome, error=error)
        elif stored.result().after_commit:
            task = asyncio.ensure_future(self._after_commit(key, outcome, stored.result()))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
        else:
            self._finish_started(key, outcome, result=stored.result().outcome)

    async def _after_commit(self, key: tuple[str, str], outcome: asyncio.Future[Outcome], done: _Done) -> None:
        try:
            for work in done.after_commit:
                await work()
        except BaseException as error:  # handed to whoever waits, as handle() would raise it
            self._finish_started(key, outcome, error=error)
            if not isinstance(error, Exception):
                raise
        else:
            self._finish_started(key, outcome, result=done.outcome)

    def _finish_started(self, key: tuple[str, str], outcome: asyncio.Future[Outcome], *,
                        result: Outcome | None = None, error: BaseException | None = None) -> None:
        self._locks.release(key)
        self._in_flight -= 1
        if outcome.done():  # nobody waits any more
            return
        if isinstance(error, asyncio.CancelledError):
            outcome.cancel()
        elif error is not None:
            outcome.set_exception(error)
        else:
            assert result is not None
            outcome.set_result(result)

    async def close(self) -> None:
        """Let the writer finish what is queued, then give its connection back (before the
        engine is disposed)."""
        while self._writer is not None:
            await asyncio.wait({self._writer})  # its failures went to the messages' callers
        await self._warm.close()

    def _admit(self) -> None:
        if self.overloaded:
            self.stats.overloaded += 1
            raise PipelineOverloaded(f"{self._in_flight} messages in flight")
        self._in_flight += 1

    # ------------------------------------------------------------ one message, one transaction

    async def _handle_one(self, inbound: Inbound) -> _Done:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self._handle_locked(inbound)
            except IntegrityError:
                # Either a retry of a stored delivery, or another process created this
                # customer first: look again with the row now there.
                duplicate = await self._duplicate_outcome(inbound)
                if duplicate is not None:
                    return _Done(duplicate, [])
                if attempt == _ATTEMPTS:
                    raise
            except DBAPIError as error:
                if not is_retryable(error) or attempt == _ATTEMPTS:
                    raise
                log.info("retrying %s after %s", mask(inbound.user_id), type(error.orig).__name__)
        raise AssertionError("unreachable")

    async def _handle_locked(self, inbound: Inbound) -> _Done:
        async with self._sessions() as session, session.begin():
            customer, conversation = await store.lock_customer_with_conversation(
                session, inbound.channel, inbound.user_id)
            turn = await self._take(session, inbound, customer, conversation)
            outgoing = self._answer(turn)
            await session.flush()
            # A retry of a stored delivery fails on the unique platform message id here: see
            # _handle_one().
            await store.insert_message(session, turn.message)
            for message in outgoing:
                await store.insert_message(session, message)
        return self._done(turn, outgoing)

    # ------------------------------------------------------------ group commit (SQLite)

    async def _through_group(self, inbound: Inbound) -> _Done:
        future: asyncio.Future[_Done] = asyncio.get_running_loop().create_future()
        self._enqueue(inbound, future)
        return await future

    def _enqueue(self, inbound: Inbound, future: asyncio.Future[_Done]) -> None:
        self._queue.append((inbound, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="pipeline group commit")
        elif self._gathered is not None and len(self._queue) >= GATHER_TARGET:
            _settle(self._gathered)

    async def _write(self) -> None:
        """Commit what is waiting, group by group, until nothing is; then end (no idle task).

        Messages that arrive while one group is being stored form the next, so a quiet service
        answers at once and a busy one shares more per commit. While busy, a small group also
        waits a moment for more (see _gather).
        """
        busy = False
        try:
            await _let_arrivals_join()
            while self._queue:
                while self._queue:
                    if busy:
                        await self._gather()
                    group = self._queue[:self._max_batch]
                    del self._queue[:self._max_batch]
                    await self._commit_group(group)
                    await _let_arrivals_join()
                    busy = True
                # Idle: the connection goes back to the pool (a message queued meanwhile is
                # taken by the outer loop).
                await self._warm.release()
        except BaseException:
            # Cancelled (shut-down): whoever still waits learns it instead of waiting forever,
            # and the connection goes back to the pool.
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
            await self._warm.forget()
            raise
        finally:
            self._writer = None

    async def _gather(self) -> None:
        """Under steady load, let a small group grow for a few milliseconds before storing it.

        A transaction costs a few milliseconds whatever its size and a message a fraction of
        one, so at a few hundred messages a second groups of two or three would spend most of
        the time on transactions and keep the service near its limit, where every hiccup shows
        in the latency. Waiting up to GATHER_SECONDS for GATHER_TARGET messages costs each
        message at most that much, like a database's commit delay, and only once the previous
        group has shown that more are coming. The wait ends as soon as the target is queued.
        """
        if len(self._queue) >= GATHER_TARGET:
            return
        loop = asyncio.get_running_loop()
        gathered = self._gathered = loop.create_future()
        timer = loop.call_later(GATHER_SECONDS, _settle, gathered)
        try:
            await gathered
        finally:
            timer.cancel()
            self._gathered = None

    async def _commit_group(self, group: list[_Waiting]) -> None:
        try:
            results = await self._handle_group([inbound for inbound, _ in group])
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - any failure: run each message on its own
            self.stats.batch_fallbacks += 1
            log.info("group of %d rolled back after %s; storing one at a time", len(group), type(error).__name__)
            for inbound, future in group:
                try:
                    result = await self._handle_one(inbound)
                except asyncio.CancelledError:
                    future.cancel()
                    raise
                except Exception as one_error:  # noqa: BLE001 - handed to this message's caller
                    if not future.done():
                        future.set_exception(one_error)
                else:
                    if not future.done():
                        future.set_result(result)
            return
        self.stats.batches += 1
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _handle_group(self, inbounds: list[Inbound]) -> list[_Done]:
        try:
            return await self._store_group(inbounds)
        except BaseException:
            await self._warm.forget()
            raise

    async def _store_group(self, inbounds: list[Inbound]) -> list[_Done]:
        session = await self._warm.begin()
        keys = {(inbound.channel, inbound.user_id) for inbound in inbounds}
        known: dict[tuple[str, str], tuple[Customer | None, Conversation | None]] = dict(
            await self._warm.take(keys))
        if len(known) < len(keys):
            known.update(await store.lock_customers_with_conversations(session, keys - known.keys()))
        # The flow stage asks every message for the customer's open runs: answer it for the
        # whole group in one query instead (most customers have none).
        await runs.note_customers_without_open_runs(
            session, [customer.id for customer, _ in known.values() if customer is not None],
            known=self._warm.without_open_runs)
        ids = store.WriterIds(session)
        turns = []
        for inbound in inbounds:
            key = (inbound.channel, inbound.user_id)
            customer, conversation = known.get(key, (None, None))
            turn = await self._take(session, inbound, customer, conversation, ids)
            known[key] = (turn.customer, turn.conversation)
            turns.append((turn, self._answer(turn)))
        # What the turns changed on the customers and conversations is written per column
        # set; the unit of work flushes only what the stages added. The group's messages go
        # in one executemany after that, with ids taken last so that a row the database
        # numbered is never in the way.
        await write_changed(session, [row for pair in known.values() for row in pair if row is not None])
        if session.new or session.dirty or session.deleted:
            await session.flush()
        new = [m for turn, outgoing in turns for m in (turn.message, *outgoing)]
        first = await ids.take(Message, len(new))
        for offset, message in enumerate(new):
            message.id = first + offset
        await store.insert_messages(session, new)
        await self._warm.seal()
        await self._warm.commit()
        self._warm.keep((key, (customer, conversation)) for key, (customer, conversation) in known.items()
                        if customer is not None)
        return [self._done(turn, outgoing) for turn, outgoing in turns]

    # ------------------------------------------------------------ the steps of one message

    async def _take(self, session: AsyncSession, inbound: Inbound, customer: Customer | None,
                    conversation: Conversation | None, ids: store.WriterIds | None = None) -> Turn:
        """Store the inbound (pending) and let the stages and the router answer it.

        With `ids` (the group's writer) new rows get their ids without a flush of their own.
        """
        now = self._clock.now()
        if customer is None:
            customer = store.new_customer(inbound.channel, inbound.user_id, now,
                                          unionid=inbound.unionid, source=_source_of(inbound))
            if ids is not None:
                customer.id = await ids.take(Customer)
            session.add(customer)
            if ids is None:
                await session.flush()
            runs.remember_without_open_runs(session, {customer.id})
            store.log_event(session, customer.id, "first_contact", now,
                            {"channel": inbound.channel, "source": customer.source})
        if conversation is None:
            conversation = store.start_conversation(session, customer, now)
            if ids is not None:
                conversation.id = await ids.take(Conversation)
            else:
                await session.flush()
        self._apply_customer_changes(session, customer, inbound)

        conversation.last_seq += 1
        incoming = store.NewMessage(
            conversation_id=conversation.id, customer_id=customer.id, seq=conversation.last_seq,
            channel=inbound.channel, direction="in", kind=str(inbound.kind), text=inbound.text,
            platform_msg_id=inbound.dedup_key, payload=inbound.payload, created_at=inbound.received_at,
        )

        turn = Turn(session=session, inbound=inbound, customer=customer, conversation=conversation,
                    message=incoming, now=now,
                    variables={"nickname": customer.nickname or DEFAULT_NICKNAME})
        await self._run(turn)
        return turn

    def _answer(self, turn: Turn) -> list[store.NewMessage]:
        """The turn's replies as outbound messages, for the caller to store."""
        incoming, conversation, customer, now = turn.message, turn.conversation, turn.customer, turn.now
        incoming.intent = turn.match.intent if turn.match else None
        outgoing = []
        for reply in turn.replies:
            conversation.last_seq += 1
            outgoing.append(store.NewMessage(
                conversation_id=conversation.id, customer_id=customer.id, seq=conversation.last_seq,
                channel=turn.inbound.channel, direction="out", kind="text", text=reply.text,
                reply_to=incoming, delivery="passive", intent=reply.intent,
                payload={"source": reply.source}, created_at=now,
            ))
        conversation.updated_at = now
        return outgoing

    def _done(self, turn: Turn, outgoing: list[store.NewMessage]) -> _Done:
        """After commit: count it and hand back the answer."""
        self.stats.handled += 1
        if not turn.understood:
            self.stats.not_understood += 1
        if log.isEnabledFor(logging.DEBUG):  # masking is not free, and runs for every message
            log.debug("handled %s from %s: %d replies", turn.inbound.kind, mask(turn.inbound.user_id), len(outgoing))
        return _Done(Outcome(replies=turn.replies, message_ids=[m.id for m in outgoing if m.id is not None]),
                     turn.after_commit)

    async def _run(self, turn: Turn) -> None:
        """Stages first (they may take the message), then the router, then stages again."""
        for stage in self._stages:
            await stage.before_route(turn)
            if turn.handled:
                break
        if not turn.handled:
            routed = self._router.route(turn.inbound, turn.variables)
            turn.replies.extend(routed.replies)
            turn.match = routed.match
            turn.understood = routed.understood
            if turn.inbound.kind is InboundKind.TEXT:
                streak = turn.conversation.not_understood_streak
                if streak or not routed.understood:  # setting a mapped attribute is not free
                    turn.conversation.not_understood_streak = 0 if routed.understood else streak + 1
        for stage in self._stages:
            await stage.after_route(turn)

    def _apply_customer_changes(self, session: AsyncSession, customer: Customer, inbound: Inbound) -> None:
        customer.last_inbound_at = inbound.received_at
        if inbound.unionid and not customer.unionid:
            customer.unionid = inbound.unionid
        if inbound.kind is not InboundKind.EVENT:
            return
        if inbound.event is EventKind.SUBSCRIBE:
            customer.subscribed = True
            customer.source = customer.source or _source_of(inbound)
        elif inbound.event is EventKind.UNSUBSCRIBE:
            customer.subscribed = False
        if inbound.event in (EventKind.SUBSCRIBE, EventKind.UNSUBSCRIBE, EventKind.SCAN):
            store.log_event(session, customer.id, str(inbound.event), inbound.received_at,
                            {"channel": inbound.channel, "key": inbound.event_key})

    async def _duplicate_outcome(self, inbound: Inbound) -> Outcome | None:
        if not inbound.dedup_key:
            return None
        async with self._sessions() as session:
            existing = await store.find_inbound(session, inbound.channel, inbound.dedup_key)
            return None if existing is None else await self._outcome_of(session, existing)

    async def _outcome_of(self, session: AsyncSession, existing: Message) -> Outcome:
        self.stats.duplicates += 1
        replies = await store.replies_to(session, existing.id)
        delivery = replies[0].delivery if replies else None
        return Outcome(
            replies=[Reply(m.text, intent=m.intent) for m in replies],
            message_ids=[m.id for m in replies],
            duplicate=True,
            delivery=delivery,
        )


async def _let_arrivals_join() -> None:
    """A few turns of the event loop, so that requests already received reach the queue.

    Storing a group on SQLite never waits (the calls run inline), so requests that arrived
    meanwhile are still unread bytes; each needs some turns (read, the channel's handler, this
    pipeline) before it is queued. Without them a busy service commits many small groups, and
    each transaction costs far more than a message does. A quiet service loses microseconds.
    """
    for _ in range(_JOIN_TURNS):
        await asyncio.sleep(0)


_JOIN_TURNS = 4


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _source_of(inbound: Inbound) -> str | None:
    """The acquisition source (QR scene / channel code) of a follow or scan."""
    if inbound.event in (EventKind.SUBSCRIBE, EventKind.SCAN) and inbound.event_key:
        return inbound.event_key
    return None
