"""Saving one message's turn: the customer's rows locked (or created), the turn's work, then the
inbound and its answer stored, all in one transaction. One interface for every database.

PostgreSQL and MariaDB run one transaction per message: many connections and the customer's row
lock let messages proceed side by side. SQLite has one writer at a time, and a transaction's
commit costs more than a message's rows, so there the store adds a commit delay: messages
waiting together share one ordinary transaction, and a group that fails for any reason is
rolled back and its messages saved one at a time, so one bad message never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.conversations import (
    NewMessage,
    customers_with_conversations,
    find_inbound,
    insert_messages,
    lock_customer_with_conversation,
    log_event,
    new_customer,
    replies_to,
    start_conversation,
)
from storage.db import read_session
from storage.flow_runs import no_open_runs, preload_open_runs
from storage.models import Conversation, Customer, Message

log = logging.getLogger(__name__)

T = TypeVar("T")

# Messages per shared transaction: large enough to share the commit, small enough that one
# group's transaction stays a few milliseconds.
MAX_BATCH = 64
# Under load (a group was committed moments ago), a group smaller than GATHER_TARGET waits up to
# GATHER_SECONDS for more before it is stored, like a database's commit delay.
GATHER_TARGET = 8
GATHER_SECONDS = 0.008


@dataclass(frozen=True, slots=True)
class Arrival:
    """Whose message is being saved, and what to record if they are new."""

    channel: str
    user_id: str
    now: datetime
    unionid: str | None = None
    source: str | None = None  # acquisition source (QR scene / channel code) of a first contact


@dataclass(slots=True)
class OpenTurn:
    """The customer's rows inside the turn's transaction (locked on PostgreSQL/MariaDB).

    The work appends the turn's messages, inbound first; they are stored in that order when it
    returns, so a reply can refer to the inbound it answers.
    """

    session: AsyncSession
    customer: Customer
    conversation: Conversation
    new_customer: bool
    messages: list[NewMessage] = field(default_factory=list)


Work = Callable[[OpenTurn], Awaitable[T]]


class TurnStore(Protocol):
    async def save(self, arrival: Arrival, work: Work[T]) -> T:
        """Open the customer's turn, run `work` in it, store its messages and commit.

        Raises what the work or the database raised (IntegrityError for a platform message id
        stored before: a retry); nothing of the turn is stored then.
        """
        ...

    async def close(self) -> None:
        """Finish what was handed over (before the engine is disposed)."""
        ...


@dataclass
class CommitStats:
    batches: int = 0  # shared transactions committed (SQLite)
    batch_fallbacks: int = 0  # groups rolled back and saved again one message at a time


def make_turn_store(sessions: async_sessionmaker[AsyncSession], *, group_commit: bool | None = None,
                    stats: CommitStats | None = None, max_batch: int = MAX_BATCH) -> TurnStore:
    """The store for the sessions' database: with a commit delay on SQLite unless told otherwise."""
    if group_commit is None:
        bind = sessions.kw.get("bind")
        group_commit = bind is not None and bind.dialect.name == "sqlite"
    if group_commit:
        return GroupCommit(sessions, stats or CommitStats(), max_batch)
    return OneAtATime(sessions)


async def open_turn(session: AsyncSession, arrival: Arrival,
                    known: tuple[Customer | None, Conversation | None] | None = None) -> OpenTurn:
    """Lock and load the customer and their open conversation; create what does not exist yet.

    `known`: the customer and conversation already read in this transaction (a shared SQLite
    transaction reads its whole group at once)."""
    if known is not None:
        customer, conversation = known
    else:
        # What earlier turns of a shared transaction changed concerns other customers: it is
        # flushed with the messages, in one go, instead of before this read.
        with session.no_autoflush:
            customer, conversation = await lock_customer_with_conversation(session, arrival.channel,
                                                                           arrival.user_id)
    created = customer is None
    if customer is None:
        customer = new_customer(arrival.channel, arrival.user_id, arrival.now, unionid=arrival.unionid,
                                source=arrival.source)
        session.add(customer)
        await session.flush()
        no_open_runs(session, customer.id)
        log_event(session, customer.id, "first_contact", arrival.now,
                  {"channel": arrival.channel, "source": customer.source})
    if conversation is None:
        conversation = start_conversation(session, customer, arrival.now)
        await session.flush()
    return OpenTurn(session, customer, conversation, created)


async def store_messages(session: AsyncSession, turns: list[OpenTurn]) -> None:
    """Write what the turns' work changed, then their messages (inbounds, then the answers)."""
    await session.flush()
    # A retry of a stored delivery fails here, on the unique platform message id.
    await insert_messages(session, [message for turn in turns for message in turn.messages])


class OneAtATime:
    """One transaction per message."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self._sessions = sessions

    async def save(self, arrival: Arrival, work: Work[T]) -> T:
        async with self._sessions() as session, session.begin():
            turn = await open_turn(session, arrival)
            result = await work(turn)
            await store_messages(session, [turn])
        return result

    async def close(self) -> None:
        return None


@dataclass(slots=True)
class _Waiting:
    arrival: Arrival
    work: Work[Any]
    future: asyncio.Future[Any]


class GroupCommit:
    """SQLite: the messages waiting together share one transaction (see the module's docstring).

    One writer task at a time takes what is queued, group by group, and ends when nothing is;
    a quiet service stores each message at once.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], stats: CommitStats, max_batch: int = MAX_BATCH):
        self._sessions = sessions
        self._alone = OneAtATime(sessions)
        self._stats = stats
        self._max_batch = max_batch
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        self._gathered: asyncio.Future[None] | None = None  # set while a small group waits for more
        self._last_commit = float("-inf")  # loop time

    async def save(self, arrival: Arrival, work: Work[T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(arrival, work, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="turn store group commit")
        elif self._gathered is not None and len(self._queue) >= GATHER_TARGET:
            _settle(self._gathered)
        return await future

    async def close(self) -> None:
        while self._writer is not None:
            await asyncio.wait({self._writer})  # its failures went to the messages' callers

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if len(self._queue) < GATHER_TARGET and loop.time() - self._last_commit < GATHER_SECONDS:
                    await self._gather()
                group = [waiting for waiting in self._queue[:self._max_batch] if not waiting.future.done()]
                del self._queue[:self._max_batch]
                if group:
                    await self._commit(group)
                    self._last_commit = loop.time()
        except BaseException:
            # Cancelled (shut-down): whoever still waits learns it instead of waiting forever.
            for waiting in self._queue:
                waiting.future.cancel()
            self._queue.clear()
            raise
        finally:
            self._writer = None

    async def _gather(self) -> None:
        """Let a small group grow for up to GATHER_SECONDS; it ends once GATHER_TARGET are queued.

        A transaction costs a few milliseconds whatever its size and a message a fraction of one,
        so under steady load groups of two or three would spend most of the time on commits.
        """
        loop = asyncio.get_running_loop()
        gathered = self._gathered = loop.create_future()
        timer = loop.call_later(GATHER_SECONDS, _settle, gathered)
        try:
            await gathered
        finally:
            timer.cancel()
            self._gathered = None

    async def _commit(self, group: list[_Waiting]) -> None:
        try:
            results = await self._save_together(group)
        except asyncio.CancelledError:
            for waiting in group:
                waiting.future.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - any failure: save each message on its own
            if len(group) == 1:
                _fail(group[0].future, error)
                return
            self._stats.batch_fallbacks += 1
            log.info("group of %d rolled back after %s; saving one at a time", len(group), type(error).__name__)
            for waiting in group:
                try:
                    result = await self._alone.save(waiting.arrival, waiting.work)
                except asyncio.CancelledError:
                    waiting.future.cancel()
                    raise
                except Exception as one_error:  # noqa: BLE001 - handed to this message's caller
                    _fail(waiting.future, one_error)
                else:
                    _succeed(waiting.future, result)
            return
        self._stats.batches += 1
        for waiting, result in zip(group, results, strict=True):
            _succeed(waiting.future, result)

    async def _save_together(self, group: list[_Waiting]) -> list[Any]:
        # One customer is never twice in a group: the pipeline hands over a customer's next
        # message only once the previous one is saved.
        results, turns = [], []
        async with self._sessions() as session, session.begin():
            known = await customers_with_conversations(
                session, {(waiting.arrival.channel, waiting.arrival.user_id) for waiting in group})
            await preload_open_runs(session, [customer.id for customer, _ in known.values()])
            for waiting in group:
                key = (waiting.arrival.channel, waiting.arrival.user_id)
                turn = await open_turn(session, waiting.arrival, known.get(key, (None, None)))
                results.append(await waiting.work(turn))
                turns.append(turn)
            await store_messages(session, turns)
        return results


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


async def stored_replies(sessions: async_sessionmaker[AsyncSession], channel: str,
                         platform_msg_id: str) -> list[Message] | None:
    """The stored answer to a platform delivery (a retry's), or None when it was never stored."""
    async with read_session(sessions) as session:
        existing = await find_inbound(session, channel, platform_msg_id)
        return None if existing is None else await replies_to(session, existing.id)
