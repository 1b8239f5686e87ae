"""An aiosqlite connection that runs SQLite calls inline on the event loop.

aiosqlite hands every call (cursor, execute, fetch, close, commit) to a worker thread and back;
on this path that hand-off costs far more than SQLite's own work on a local WAL file, which
takes microseconds. So calls run inline, and the one thing that can take long — waiting for
another process's write lock — is retried with `asyncio.sleep`, never a blocking busy wait.

The other is a WAL checkpoint: SQLite runs one inside the commit that fills the WAL past its
limit, and it syncs the database file to disk, stalling the event loop for tens of milliseconds
every few dozen commits. So this connection turns automatic checkpoints off and, every few dozen
commits, runs a passive checkpoint on its own connection in a worker thread (SQLite releases the
GIL while it writes and syncs). Transactions go on meanwhile, except after every few checkpoints:
then the next transaction waits for it without blocking the loop, so that it begins on a fully
copied WAL and SQLite starts the WAL over. The checkpoints before it have copied most of the WAL,
so that wait is short, and the WAL file stays at the size a few checkpoints' worth of commits
take. (Waiting after every checkpoint left the event loop idle for about a tenth of the time
under full load; never waiting lets the WAL grow without bound while messages keep coming, and
on ext4 the checkpoint's syncs then stall the appends to the growing file.)
Durability is the same as before: with WAL and synchronous=NORMAL a commit survives the process
crashing; a power loss may lose the last commits since the WAL was last synced, which each
checkpoint does.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Generator
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

LOCK_WAIT_SECONDS = 30.0
COMMITS_PER_CHECKPOINT = 32
CHECKPOINTS_PER_RESTART = 4  # every this many, the next transaction waits and the WAL starts over
WAL_SIZE_LIMIT = 16 * 1024 * 1024  # the file, once a checkpoint let it start over


class _InlineQueue:
    """Stands in for aiosqlite's queue to its worker thread: work put on it is done at once.

    SQLAlchemy's aiosqlite adapter puts work on that queue directly (its isolation_level setter).
    """

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as error:  # noqa: BLE001 - handed to the waiting future, as the thread would
            if future is not None:
                future.set_exception(error)
            return
        if future is not None:
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int = 64,
                 path: str = ""):
        super().__init__(connector, iter_chunk_size)
        self._tx = _InlineQueue()  # type: ignore[assignment]
        self._path = path
        self._commits = 0
        self._checkpoints = 0
        self._checkpoint: asyncio.Future[None] | None = None  # the latest, the `_checkpoints`th

    async def commit(self) -> None:
        await super().commit()
        self._commits += 1
        if self._path and self._commits % COMMITS_PER_CHECKPOINT == 0 and (
                self._checkpoint is None or self._checkpoint.done()):
            self._checkpoints += 1
            self._checkpoint = asyncio.get_running_loop().run_in_executor(None, checkpoint, self._path)

    async def begin_immediate(self) -> None:
        """BEGIN IMMEDIATE: take the write lock now, waiting (off the loop) while another has it."""
        await self._execute(self.sqlite.execute, "BEGIN IMMEDIATE")

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        if (self._checkpoint is not None and not self._checkpoint.done()
                and self._checkpoints % CHECKPOINTS_PER_RESTART == 0
                and args and isinstance(args[0], str) and args[0].startswith("BEGIN")):
            # This transaction starts once the checkpoint is done: only a transaction that
            # begins on a fully copied WAL lets SQLite start the WAL over, which keeps it small.
            await asyncio.shield(self._checkpoint)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        pause = 0.001
        while True:
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as error:
                # SQLITE_BUSY: nothing was done; another writer holds the lock. Wait without
                # blocking the loop, as busy_timeout would have waited blocking it.
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The sqlite3 connection itself, for statements run without the driver's wrapping."""
        if self._connection is None:
            raise ValueError("Connection closed")
        return self._connection

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
            if self._path:
                self._connection.execute("PRAGMA wal_autocheckpoint=0")  # see the module's docstring
                self._connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return self

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._connect().__await__()

    def stop(self) -> None:  # type: ignore[override]
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()


def checkpoint(path: str) -> None:
    """Copy what the WAL holds into the database file, without waiting for anyone (worker thread)."""
    try:
        # mode=rw: never create a database that is gone (a test's temporary file, say).
        connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=0, isolation_level=None)
    except sqlite3.Error as error:
        log.debug("no checkpoint of %s: %s", path, error)
        return
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error as error:
        log.debug("checkpoint of %s failed: %s", path, error)
    finally:
        connection.close()


def inline_creator(path: str) -> Callable[[], Any]:
    # An in-memory database has no WAL to checkpoint.
    on_disk = path if path and path != ":memory:" and not path.startswith("file:") else ""

    async def create() -> InlineConnection:
        # busy_timeout 0: lock waits happen in _execute, off the event loop's critical path.
        return await InlineConnection(lambda: sqlite3.connect(path, timeout=0, check_same_thread=False,
                                                              isolation_level=None), path=on_disk)
    return create
