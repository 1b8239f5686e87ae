"""Background work gives way to customers' messages.

A sweep (lifecycle, points expiry, scheduled and due flow runs) shares the event loop and, on
SQLite, the database's one writer with the message path. Between its pieces of work it calls
`Pacer.pause()`: once it has worked for a slice, it rests long enough that its work is at most
BACKGROUND_SHARE of the time. Work is the event loop thread's CPU time: waiting for the database
costs the loop nothing and is not counted, while the messages the loop answered in between are,
so under load a sweep backs off further and on a quiet service it runs at full speed.
"""

from __future__ import annotations

import asyncio
import time

BACKGROUND_SHARE = 0.5
SLICE_SECONDS = 0.02


class Pacer:
    def __init__(self, share: float = BACKGROUND_SHARE, slice_seconds: float = SLICE_SECONDS):
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self._share, self._slice = share, slice_seconds
        self._since = time.thread_time()

    async def pause(self) -> None:
        """Between two pieces of work: rest if this slice is used up, else just let others run."""
        worked = time.thread_time() - self._since
        if worked < self._slice:
            await asyncio.sleep(0)
            return
        await asyncio.sleep(worked * (1 - self._share) / self._share)
        self._since = time.thread_time()
