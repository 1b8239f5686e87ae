"""Engine and session factory for the configured database, tuned per backend."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

# Connections per process on SQLite. SQLite has one writer at a time whatever the pool holds:
# writers queue on BEGIN IMMEDIATE (in their connection's worker thread, up to the busy
# timeout). What more than one connection buys is that nobody waits for the pool behind a
# writer: the console, reports and the duplicate check read from the WAL beside a message's
# transaction, and a sweeper's write waits for the lock, not for the message path's connection.
# Four covers the message path's writer, one sweeper or dispatch, and two readers; more would
# only add writers queuing on the same lock.
SQLITE_POOL_SIZE = 4
# How long a SQLite transaction waits for another's write lock before "database is locked".
# It waits in the connection's worker thread, never on the event loop.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option of sessions and connections that only read: on SQLite they begin a deferred
# transaction (a WAL snapshot), so they never wait for, nor hold up, the write lock.
READ_ONLY = "siyu_read_only"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """The engine for `url`; `pool_size` is for PostgreSQL/MySQL (SQLite: SQLITE_POOL_SIZE)."""
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": not is_sqlite(url)}
    if is_sqlite(url):
        kwargs.update(pool_size=SQLITE_POOL_SIZE, max_overflow=0)
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        turns = _WriteTurns()
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", turns.begin)
        event.listen(engine.sync_engine, "commit", turns.end)
        event.listen(engine.sync_engine, "rollback", turns.end)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers beside the writer, here and in other processes
    cursor.execute("PRAGMA synchronous=NORMAL")  # a commit survives the process dying; WAL keeps it consistent
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()
    # The driver's own BEGIN is deferred; we issue ours in _WriteTurns.begin (SQLAlchemy's
    # documented recipe for SQLite transactions).
    dbapi_connection.isolation_level = None


class _WriteTurns:
    """The engine's write transactions take SQLite's write lock in the order they asked for it.

    SQLite's own busy handler retries at growing intervals, so a writer that commits and begins
    again at once (the message path under load) could keep a sweeper or the console waiting
    until its busy timeout. Within the process writers queue here instead, first come first
    served, before BEGIN IMMEDIATE; other processes on the file still queue on the busy timeout.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        # The connections holding the turn. Kept here, not in connection.info: a transaction cut
        # short (a cancelled request) leaves its connection invalid, and reading its info then
        # raises instead of letting the next writer in.
        self._holders: set[Connection] = set()

    def begin(self, connection: Connection) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
            return
        # The documented way to await inside a connection event of an async engine.
        adapted: Any = connection.connection.dbapi_connection
        # Bounded like SQLite's own wait: a writer that never lets go is an error, not a hang.
        adapted.run_async(lambda _driver: asyncio.wait_for(self._lock.acquire(), SQLITE_BUSY_TIMEOUT_MS / 1000))
        try:
            # IMMEDIATE takes the write lock up front, so two writers (two processes on one
            # file) queue instead of one failing when it upgrades a stale read to a write.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        self._holders.add(connection)

    def end(self, connection: Connection) -> None:
        # Called just before COMMIT / ROLLBACK: the next writer's BEGIN waits (in its worker
        # thread) only for this one to finish.
        if connection in self._holders:
            self._holders.discard(connection)
            self._lock.release()



def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads only (lists, reports, look-ups): on SQLite they never take the write lock."""
    return async_sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


def read_session(sessions: async_sessionmaker[AsyncSession]) -> AsyncSession:
    """A session of `sessions` for reads only (see make_read_sessionmaker)."""
    bind = sessions.kw.get("bind")
    if bind is None:
        return sessions()
    return sessions(bind=bind.execution_options(**{READ_ONLY: True}))


_RETRYABLE_MYSQL = {1213, 1205}  # deadlock, lock wait timeout
_RETRYABLE_SQLSTATE = {"40001", "40P01"}  # serialization failure, deadlock detected


def is_retryable(error: BaseException) -> bool:
    """A transaction the database aborted to break a deadlock: running it again is safe."""
    if not isinstance(error, DBAPIError):
        return False
    orig = error.orig
    code = getattr(orig, "args", (None,))[0] if getattr(orig, "args", None) else None
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in _RETRYABLE_MYSQL or sqlstate in _RETRYABLE_SQLSTATE


# SQLSTATE classes of a database that cannot take writes now, whatever was asked: connection
# exceptions, insufficient resources (disk full, out of memory), operator intervention (shut
# down), system errors.
_UNAVAILABLE_SQLSTATE_CLASSES = {"08", "53", "57", "58"}


def storage_unavailable(error: BaseException) -> bool:
    """The database cannot be reached or cannot write now (down, disk full, locked past the
    busy timeout), as opposed to refusing one request's values: every request would fail alike."""
    if isinstance(error, OperationalError | InterfaceError | PoolTimeout | OSError):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return False


async def database_reachable(engine: AsyncEngine) -> bool:
    try:
        async with engine.execution_options(**{READ_ONLY: True}).connect() as connection:
            await connection.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable" for a health check
        return False
