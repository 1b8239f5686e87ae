"""Statements the SQLite message writer runs straight on its sqlite3 connection.

On SQLite the message path stores a group of messages in one transaction, and each statement
sent through SQLAlchemy costs several hundred microseconds of Python where SQLite itself takes
tens. The few statements every group repeats (its ids, its open flow runs, the changed
customer and conversation columns, the new messages) are compiled once by SQLAlchemy for the
dialect and run on the driver's connection; their parameters go through the columns' own bind
processors, so values are stored exactly as SQLAlchemy stores them. Only the per-execution
machinery is skipped, with its events and `echo` logging.

Only for a session bound to an engine made by storage.db (its connections run SQLite inline),
inside a transaction that already holds the write lock (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from storage.sqlite_inline import InlineConnection


class _Prepared:
    """A compiled statement and how to turn a row of values into its positional parameters."""

    def __init__(self, sql: str, names: tuple[str, ...], defaults: Mapping[str, Any],
                 processors: Sequence[Callable[[Any], Any] | None]):
        self.sql = sql
        self.names = names
        self.defaults = defaults  # values bound in the statement itself
        # A row that carries every parameter (the usual case) is read in one C call, and only
        # the few columns with a bind processor (datetimes, JSON) are touched in Python.
        self._every = itemgetter(*names) if len(names) > 1 else None
        self._processed = tuple((index, process) for index, process in enumerate(processors) if process is not None)

    def positional(self, values: Sequence[Any]) -> list[Any]:
        """Parameters from values already in the statement's order (see executemany_values)."""
        return self._processed_in_place(list(values))

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        try:
            out = list(self._every(values)) if self._every is not None else [values[name] for name in self.names]
        except KeyError:  # some values come from the statement itself
            out = [values[name] if name in values else self.defaults[name] for name in self.names]
        return self._processed_in_place(out)

    def _processed_in_place(self, out: list[Any]) -> list[Any]:
        for index, process in self._processed:
            value = out[index]
            if value is not None:
                out[index] = process(value)
        return out


_prepared: dict[tuple[int, str, tuple[str, ...]], tuple[ClauseElement, _Prepared]] = {}


def _prepare(statement: ClauseElement, dialect: Dialect, column_keys: Sequence[str] = ()) -> _Prepared:
    key = (id(statement), dialect.name, tuple(column_keys))
    cached = _prepared.get(key)
    if cached is not None and cached[0] is statement:
        return cached[1]
    compiled = statement.compile(dialect=dialect, column_keys=list(column_keys) or None)
    if not isinstance(compiled, SQLCompiler) or compiled.positiontup is None:
        raise ValueError("sqlite_direct needs a positional paramstyle")
    names = tuple(compiled.positiontup)
    # The dialect's own processors, as SQLAlchemy's execution uses them (SQLite's text for
    # datetimes, floats for decimals), so that values are stored exactly as it stores them.
    processors = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
    prepared = _Prepared(compiled.string, names, dict(compiled.params), processors)
    _prepared[key] = (statement, prepared)  # the statement is kept so its id stays its own
    return prepared


_CONNECTION = "storage.sqlite_direct.connection"


async def _sqlite(session: AsyncSession) -> tuple[sqlite3.Connection, Dialect]:
    driver, dialect = await _driver(session)
    return driver.sqlite, dialect


async def _driver(session: AsyncSession) -> tuple[InlineConnection, Dialect]:
    # Finding the driver's connection costs a trip through SQLAlchemy's async layer: once per
    # transaction, which keeps its connection until it ends.
    transaction = session.sync_session.get_transaction()
    cached = session.info.get(_CONNECTION)
    if cached is not None and transaction is not None and cached[0] is transaction:
        return cached[1], cached[2]
    connection = await session.connection()
    # The transaction's connection is established: reaching its driver needs no I/O.
    driver = connection.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    if not isinstance(driver, InlineConnection):
        raise TypeError("sqlite_direct needs the inline SQLite connection of storage.db")
    session.info[_CONNECTION] = (session.sync_session.get_transaction(), driver, connection.dialect)
    return driver, connection.dialect


async def begin_immediate(session: AsyncSession) -> None:
    """BEGIN IMMEDIATE on the session's connection, below SQLAlchemy's own transaction."""
    driver, _ = await _driver(session)
    await driver.begin_immediate()


async def commit(session: AsyncSession) -> None:
    """COMMIT on the session's connection, below SQLAlchemy's own transaction (which goes on)."""
    driver, _ = await _driver(session)
    await driver.commit()


async def executemany(session: AsyncSession, statement: ClauseElement, rows: Sequence[Mapping[str, Any]],
                      column_keys: Sequence[str] = ()) -> None:
    """Run an INSERT or UPDATE once per row (`column_keys`: the columns an INSERT sets)."""
    if not rows:
        return
    sqlite, dialect = await _sqlite(session)
    prepared = _prepare(statement, dialect, column_keys)
    sqlite.executemany(prepared.sql, [prepared.parameters(row) for row in rows])


async def executemany_values(session: AsyncSession, statement: ClauseElement, column_keys: Sequence[str],
                             rows: Sequence[Sequence[Any]]) -> None:
    """Run an INSERT once per row given as values in `column_keys` order (no dict per row)."""
    if not rows:
        return
    sqlite, dialect = await _sqlite(session)
    prepared = _prepare(statement, dialect, column_keys)
    if prepared.names != tuple(column_keys):
        raise ValueError(f"the statement binds {prepared.names}, not {tuple(column_keys)}")
    sqlite.executemany(prepared.sql, [prepared.positional(row) for row in rows])


async def scalars(session: AsyncSession, statement: ClauseElement,
                  values: Mapping[str, Any] | None = None) -> list[Any]:
    """The first column of every row of a SELECT whose columns need no result processing (ids, counts)."""
    sqlite, dialect = await _sqlite(session)
    prepared = _prepare(statement, dialect)
    return [row[0] for row in sqlite.execute(prepared.sql, prepared.parameters(values or {}))]


def as_json_list(values: Iterable[Any]) -> str:
    """A list parameter for `… IN (SELECT value FROM json_each(:param))`: one SQL string whatever its length."""
    return json.dumps(list(values))


async def change_marker(session: AsyncSession) -> tuple[int, int, int]:
    """What changes when anything writes to the database: equal markers taken in two
    transactions of this connection mean nobody wrote in between (this connection counts its
    own rows changed, `data_version` counts every other connection's commits)."""
    sqlite, _ = await _sqlite(session)
    (version,) = sqlite.execute("PRAGMA data_version").fetchone()
    return id(sqlite), version, sqlite.total_changes
