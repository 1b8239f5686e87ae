"""Per-customer locks inside one process, taken before any state is loaded.

Most messages find their customer's lock free, so taking a free one is a dictionary entry and
nothing else: no lock object, no await. Only a customer with a message already in flight gets a
queue of waiters, served in arrival order. A key's entry goes when its last holder lets go, so
the table does not grow with every customer ever seen. Across processes the customer's row
lock (storage.conversations.lock_customer) does the same job.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from types import TracebackType


class CustomerLocks:
    def __init__(self) -> None:
        # Present while held; the waiters (None until someone waits) in arrival order.
        self._held: dict[Hashable, deque[asyncio.Future[None]] | None] = {}

    def try_take(self, key: Hashable) -> bool:
        """Take the key's lock if it is free (then `release` it), without waiting."""
        if key in self._held:
            return False
        self._held[key] = None
        return True

    async def take(self, key: Hashable) -> None:
        """Take the key's lock, after everyone who asked for it before (then `release` it)."""
        if self.try_take(key):
            return
        waiters = self._held[key]
        if waiters is None:
            waiters = self._held[key] = deque()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # handed over just as we were cancelled: pass it on
            elif waiter in waiters:  # (a release may have dropped it already)
                waiters.remove(waiter)
            raise

    def release(self, key: Hashable) -> None:
        """Hand the key's lock to the next waiter, or free it."""
        waiters = self._held[key]
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        del self._held[key]

    def hold(self, key: Hashable) -> _Hold:
        """`async with locks.hold(key):` — one holder per key at a time, in arrival order."""
        return _Hold(self, key)

    def __len__(self) -> int:
        return len(self._held)


class _Hold:
    """The context manager behind `hold` (a class: a generator-based one costs several times as much)."""

    __slots__ = ("_locks", "_key")

    def __init__(self, locks: CustomerLocks, key: Hashable):
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        await self._locks.take(self._key)

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self._locks.release(self._key)
