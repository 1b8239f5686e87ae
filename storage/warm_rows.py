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
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import instance_state

from storage import sqlite_direct
from storage.models import Conversation, Customer

Key = tuple[str, str]  # (channel, external id)
Pair = tuple[Customer, Conversation | None]

LIMIT = 4096


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

    def session(self) -> AsyncSession:
        """The writer's session, kept between its transactions: the kept rows stay in it."""
        if self._session is None:
            self._session = self._sessions()
        return self._session

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
        """A group failed: what the rows and the session hold may never have been committed."""
        self._rows.clear()
        self._without_open_runs = set()
        self._marker = self._sealed = None
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
