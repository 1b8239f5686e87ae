"""Engine and session factory for the configured database, tuned per backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

from storage.sqlite_inline import inline_creator


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": not is_sqlite(url)}
    if is_sqlite(url):
        # SQLite has one writer: a single connection serialises writes without "database is
        # locked" errors, and WAL lets readers of other processes (siyu report) proceed.
        kwargs.update(pool_size=1, max_overflow=0, async_creator=inline_creator(make_url(url).database or ""))
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # We issue BEGIN ourselves (below) instead of the driver's deferred one.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            # IMMEDIATE takes the write lock up front, so two processes on one file (serve and
            # chat, say) queue instead of failing on a stale read of a customer's conversation.
            # Sent straight to the inline connection: every transaction begins here, and a
            # statement through SQLAlchemy costs far more than SQLite's BEGIN.
            await_only(connection.connection.driver_connection.begin_immediate())

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


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


async def database_reachable(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable" for a health check
        return False
