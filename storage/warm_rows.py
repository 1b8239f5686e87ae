"""Customers and conversations the SQLite group writer stored last, kept for its next group.

Loading a group's customers and conversations is the largest part of storing a message that
is not SQLite's own work. The writer keeps what it committed and, at the start of its next
transaction (which holds the database's one write lock), uses those rows again only if
nothing at all was written to the database in between: by this connection, which serves every
session of the process, or by any other (another process, `siyu import`). Any other write, a
failed group or an incompletely loaded row, and the rows are loaded again. The rows stay in
the writer's session, kept here with them between its transactions: adding them back to a new
session for every group was a large part of what a message cost.

Inside its own transactions the writer changes these rows only through these objects (stages set
attributes; bulk UPDATEs of customers belong to the sweepers, in their own transactions), so what
it keeps is what it committed. A stage that updated customers or conversations with a bulk
statement inside the message path would have to refresh the objects it changed.

The session also holds one SQLAlchemy transaction across several groups while the writer is
busy, each group a SQLite transaction of its own below it (BEGIN IMMEDIATE … COMMIT on the same
connection): SQLAlchemy's begin and commit (the pool's one connection checked out and back,
its events) cost more than a small group's SQLite work. The connection goes back to the pool
after GROUPS_PER_HOLD groups, when the writer runs out of work, and when a group fails, so other
sessions of the process wait for it no longer than a few groups.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction, async_sessionmaker
from sqlalchemy.orm.attributes import instance_state

from storage import sqlite_direct
from storage.models import Conversation, Customer

Key = tuple[str, str]  # (channel, external id)
Pair = tuple[Customer, Conversation | None]

LIMIT = 4096
GROUPS_PER_HOLD = 8

log = logging.getLogger(__name__)


class WarmRows:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], limit: int = LIMIT) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None
        self._limit = limit
        self._rows: dict[Key, Pair] = {}
        # Customers the last transaction ended without an open flow run; the next transaction
        # updates it in place (flows.runs), and it is let go with the rows.
        self._without_open_runs: set[int] = set()
        self._marker: tuple[int, int, int] | None = None
        self._sealed: tuple[int, int, int] | None = None
        self._held: AsyncSessionTransaction | None = None  # SQLAlchemy's, across groups
        self._held_groups = 0

    def session(self) -> AsyncSession:
        """The writer's session, kept between its transactions: the kept rows stay in it."""
        if self._session is None:
            self._session = self._sessions()
        return self._session

    async def begin(self) -> AsyncSession:
        """Begin a group's SQLite transaction (BEGIN IMMEDIATE) in the writer's session."""
        session = self.session()
        if self._held is None:
            self._held = await session.begin()
            self._held_groups = 0
            await session.connection()  # the pool's connection, and BEGIN IMMEDIATE (storage.db)
        else:
            await sqlite_direct.begin_immediate(session)
        return session

    async def commit(self) -> None:
        """Commit the group's SQLite transaction (what the unit of work holds is flushed first)."""
        session = self.session()
        if session.new or session.dirty or session.deleted:
            await session.flush()
        await sqlite_direct.commit(session)
        self._held_groups += 1
        if self._held_groups >= GROUPS_PER_HOLD:
            await self.release()

    async def release(self) -> None:
        """Between groups: end SQLAlchemy's transaction, handing the connection back to the pool."""
        held, self._held = self._held, None
        if held is None:
            return
        try:
            await held.commit()  # nothing is left to commit: each group committed its own
        except Exception as error:  # noqa: BLE001 - the next group starts afresh instead
            log.warning("writer's session could not end its transaction: %s", error)
            await self.forget()

    async def close(self) -> None:
        """The writer stops: its transaction ends and its session lets go of the connection."""
        await self.release()
        await self.forget()

    async def take(self, keys: Iterable[Key]) -> dict[Key, Pair]:
        """The kept rows among these keys; the first step of a group, in `session()`'s transaction.

        When anyone else wrote since the last group, everything the session holds may be stale
        and is let go, so that the group loads its rows afresh.
        """
        session = self.session()
        if await sqlite_direct.change_marker(session) != self._marker:
            self._rows.clear()
            self._without_open_runs = set()
            session.expunge_all()
        self._marker = self._sealed = None
        found: dict[Key, Pair] = {}
        for key in keys:
            pair = self._rows.pop(key, None)  # in use: out of the cache until kept again
            if pair is not None:
                found[key] = pair
        return found

    @property
    def without_open_runs(self) -> set[int]:
        """Customers the last committed group left without an open flow run (after `take`): the
        group's transaction keeps it up to date (flows.runs.note_customers_without_open_runs)."""
        return self._without_open_runs

    async def seal(self) -> None:
        """The group's writes are done: note the database as this transaction leaves it."""
        self._sealed = await sqlite_direct.change_marker(self.session())

    def keep(self, pairs: Iterable[tuple[Key, Pair]]) -> None:
        """After the group committed: keep its fully loaded rows for the next group."""
        self._marker, self._sealed = self._sealed, None
        if self._marker is None:
            return
        if len(self._rows) > self._limit:
            self._rows.clear()  # the session lets them go once nothing refers to them
            self._without_open_runs = set()
        for key, (customer, conversation) in pairs:
            if _complete(customer) and (conversation is None or _complete(conversation)):
                self._rows[key] = (customer, conversation)

    async def forget(self) -> None:
        """A group failed: what the rows and the session hold may never have been committed.
        Closing the session rolls back whatever transaction is open and frees the connection."""
        self._rows.clear()
        self._without_open_runs = set()
        self._marker = self._sealed = None
        self._held = None
        session, self._session = self._session, None
        if session is not None:
            await asyncio.shield(session.close())

    def __len__(self) -> int:
        return len(self._rows)


def _complete(row: object) -> bool:
    # A row with an attribute never loaded (or expired) would be read lazily: I/O the next
    # group cannot do outside SQLAlchemy's async layer, and possibly stale. (What
    # `state.unloaded` says, without building its sets: this runs for every row of every group.)
    state = instance_state(row)
    return not state.modified and not state.expired_attributes and state.dict.keys() >= _attributes(state.manager)


def _attributes(manager: Any) -> frozenset[str]:
    keys = _attribute_keys.get(manager)
    if keys is None:
        keys = _attribute_keys[manager] = frozenset(manager)
    return keys


_attribute_keys: dict[Any, frozenset[str]] = {}
