"""Per-customer locks inside one process, taken before any state is loaded.

Idle locks are evicted so the table does not grow with every customer ever seen. Across
processes the customer's row lock (storage.conversations.lock_customer) does the same job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from types import TracebackType


class CustomerLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def hold(self, key: Hashable) -> _Hold:
        """`async with locks.hold(key):` — one holder per key at a time, in arrival order."""
        return _Hold(self._locks, key)

    def __len__(self) -> int:
        return len(self._locks)


class _Hold:
    """The context manager behind `hold` (a class: every message takes one, and a generator
    based one costs several times as much)."""

    __slots__ = ("_locks", "_key")

    def __init__(self, locks: dict[Hashable, tuple[asyncio.Lock, int]], key: Hashable):
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        lock, users = self._locks.get(self._key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[self._key] = (lock, users + 1)
        try:
            await lock.acquire()  # asyncio.Lock wakes waiters in FIFO order: arrival order is kept
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self._locks[self._key][0].release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self._locks[self._key]
        if users == 1:
            del self._locks[self._key]
        else:
            self._locks[self._key] = (lock, users - 1)
