"""The group journal: every group event stored before it is answered, many per transaction.

A busy group sends far more messages than it sends to the bot, and each of them is only stored
and counted; one transaction per message would cost more than the message itself. So events
wait together (like the message path's commit delay on SQLite) and one writer task stores each
group of them in one transaction, with the lifecycle's reactions (storage.groups,
flows.groups). A caller waits for its event's commit: what the gateway was told is stored is
stored. A failed group is rolled back and its events stored one at a time, so one bad event
never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from flows.groups import react_to_group_activity
from flows.lifecycle_settings import LifecycleSettings
from flows.reactions import NoReactions, Reactions
from storage.db import is_retryable
from storage.groups import Account, Applied, GroupArrival, GroupPost, apply_group_events

log = logging.getLogger(__name__)

MAX_BATCH = 200  # events per transaction
MAX_WAITING = 5000  # beyond this the journal refuses new events at once (the gateway retries)
GATHER_TARGET = 16
GATHER_SECONDS = 0.005
_ATTEMPTS = 3


class JournalOverloaded(Exception):
    """More group events are waiting than the journal takes on; nothing of this one was stored."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """One event's fate: stored now, or a retry of one stored before; each member's record."""

    duplicate: bool
    accounts: dict[str, Account]


@dataclass(slots=True)
class _Waiting:
    arrival: GroupArrival | None
    posts: list[GroupPost]
    future: asyncio.Future[Recorded] | None


@dataclass
class JournalStats:
    events: int = 0
    duplicates: int = 0
    batches: int = 0
    fallbacks: int = 0
    overloaded: int = 0
    failed_posts: int = 0


WelcomeListener = Callable[[str, int], None]  # (channel, welcome post id), once it is committed


class GroupJournal:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock, zone: ZoneInfo,
                 lifecycle: LifecycleSettings, reactions: Reactions | None = None, *,
                 welcome_gather_seconds: float | None = None, max_batch: int = MAX_BATCH,
                 max_waiting: int = MAX_WAITING):
        """`welcome_gather_seconds`: a join starts (or joins) a welcome due that much later;
        None: joins get no welcome."""
        self._sessions = sessions
        self._clock = clock
        self._zone = zone
        self._lifecycle = lifecycle
        self._reactions = reactions or NoReactions()
        self._welcome = None if welcome_gather_seconds is None else timedelta(seconds=welcome_gather_seconds)
        self._max_batch = max_batch
        self.max_waiting = max_waiting
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        self._gathered: asyncio.Future[None] | None = None
        self._last_commit = float("-inf")
        self._listeners: list[WelcomeListener] = []
        self.stats = JournalStats()

    @property
    def overloaded(self) -> bool:
        return len(self._queue) >= self.max_waiting

    def on_welcome(self, listener: WelcomeListener) -> None:
        self._listeners.append(listener)

    async def record(self, arrival: GroupArrival) -> Recorded:
        """Store one event (or recognise its retry) and return once it is committed."""
        if self.overloaded:
            self.stats.overloaded += 1
            raise JournalOverloaded(f"{len(self._queue)} group events waiting")
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._enqueue(_Waiting(arrival, [], future))
        return await future

    def post(self, posts: Sequence[GroupPost]) -> None:
        """Note what the bot said in a group (already on its way); stored with the next group."""
        if posts:
            self._enqueue(_Waiting(None, list(posts), None))

    async def close(self) -> None:
        while self._writer is not None:
            await asyncio.wait({self._writer})

    def _enqueue(self, waiting: _Waiting) -> None:
        self._queue.append(waiting)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="group journal")
        elif self._gathered is not None and len(self._queue) >= GATHER_TARGET:
            _settle(self._gathered)

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if len(self._queue) < GATHER_TARGET and loop.time() - self._last_commit < GATHER_SECONDS:
                    await self._gather()
                group = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
                await self._commit(group)
                self._last_commit = loop.time()
        except BaseException:
            for waiting in self._queue:
                if waiting.future is not None:
                    waiting.future.cancel()
            self._queue.clear()
            raise
        finally:
            self._writer = None

    async def _gather(self) -> None:
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
            applied = await self._store(group)
        except asyncio.CancelledError:
            for waiting in group:
                if waiting.future is not None:
                    waiting.future.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - any failure: store each event on its own
            if len(group) == 1:
                self._fail(group[0], error)
                return
            self.stats.fallbacks += 1
            log.info("group journal: %d events rolled back after %s; storing one at a time", len(group),
                     type(error).__name__)
            for waiting in group:
                try:
                    alone = await self._store([waiting])
                except asyncio.CancelledError:
                    if waiting.future is not None:
                        waiting.future.cancel()
                    raise
                except Exception as one_error:  # noqa: BLE001 - handed to this event's caller
                    self._fail(waiting, one_error)
                else:
                    self._done([waiting], alone)
            return
        self.stats.batches += 1
        self._done(group, applied)

    async def _store(self, group: list[_Waiting]) -> Applied:
        arrivals = [w.arrival for w in group if w.arrival is not None]
        posts = [post for w in group for post in w.posts]
        for attempt in range(1, _ATTEMPTS + 1):
            now = self._clock.now()
            try:
                async with self._sessions() as session, session.begin():
                    applied = await apply_group_events(session, arrivals, posts, now, now.astimezone(self._zone).date(),
                                                       None if self._welcome is None else now + self._welcome)
                    await react_to_group_activity(session, applied, now, self._lifecycle, self._reactions)
                return applied
            except IntegrityError:
                # Another process stored one of these events (or created one of these groups)
                # meanwhile: the next attempt sees it.
                if attempt == _ATTEMPTS:
                    raise
            except DBAPIError as error:
                if not is_retryable(error) or attempt == _ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _done(self, group: list[_Waiting], applied: Applied) -> None:
        for waiting in group:
            arrival = waiting.arrival
            if arrival is None or waiting.future is None:
                continue
            duplicate = (arrival.channel, arrival.event_id) in applied.duplicates
            self.stats.events += 1
            self.stats.duplicates += duplicate
            accounts = {m.id: applied.accounts[(arrival.channel, m.id)] for m in arrival.members
                        if (arrival.channel, m.id) in applied.accounts}
            if not waiting.future.done():
                waiting.future.set_result(Recorded(duplicate, accounts))
        for channel, post_id in applied.welcomes:
            for listener in self._listeners:
                listener(channel, post_id)

    def _fail(self, waiting: _Waiting, error: BaseException) -> None:
        if waiting.future is None:
            self.stats.failed_posts += len(waiting.posts)
            log.warning("group journal: %d bot posts not stored: %s", len(waiting.posts), error)
        elif not waiting.future.done():
            waiting.future.set_exception(error)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
