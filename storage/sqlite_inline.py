"""An aiosqlite connection that runs SQLite calls inline on the event loop.

aiosqlite hands every call (cursor, execute, fetch, close, commit) to a worker thread and back;
on this path that hand-off costs far more than SQLite's own work on a local WAL file, which
takes microseconds. So calls run inline, and the one thing that can take long — waiting for
another process's write lock — is retried with `asyncio.sleep`, never a blocking busy wait.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Generator
from typing import Any

import aiosqlite

LOCK_WAIT_SECONDS = 30.0


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
    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int = 64):
        super().__init__(connector, iter_chunk_size)
        self._tx = _InlineQueue()  # type: ignore[assignment]

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
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

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
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


def inline_creator(path: str) -> Callable[[], Any]:
    async def create() -> InlineConnection:
        # busy_timeout 0: lock waits happen in _execute, off the event loop's critical path.
        return await InlineConnection(lambda: sqlite3.connect(path, timeout=0, check_same_thread=False,
                                                              isolation_level=None))
    return create
