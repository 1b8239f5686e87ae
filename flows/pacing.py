"""Background work gives way to customers' messages.

A sweep (lifecycle, points expiry, scheduled and due flow runs) shares the event loop and, on
SQLite, the database's one writer with the message path. Between its pieces of work it calls
`Pacer.pause()`: once it has worked for a slice, it rests long enough that its work is at most
BACKGROUND_SHARE of the time. The work is measured as wall time, which includes the messages the
loop answered in between: under load a sweep backs off further, on a quiet service it runs at
its share's full speed.
"""

from __future__ import annotations

import asyncio

BACKGROUND_SHARE = 0.3
SLICE_SECONDS = 0.02


class Pacer:
    def __init__(self, share: float = BACKGROUND_SHARE, slice_seconds: float = SLICE_SECONDS):
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self._share, self._slice = share, slice_seconds
        self._loop = asyncio.get_running_loop()
        self._since = self._loop.time()

    async def pause(self) -> None:
        """Between two pieces of work: rest if this slice is used up, else just let others run."""
        worked = self._loop.time() - self._since
        if worked < self._slice:
            await asyncio.sleep(0)
            return
        await asyncio.sleep(worked * (1 - self._share) / self._share)
        self._since = self._loop.time()
