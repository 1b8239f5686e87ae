"""Wakes the console's live streams when a conversation changes in this process.

Other processes' changes are picked up by the streams' short database poll (see routes.events).
"""

from __future__ import annotations

import asyncio


class ConsoleHub:
    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self.version = 0
        self.closing = False

    async def notify(self) -> None:
        """Something a console shows changed: a message, a state, a delivery."""
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, seen: int, timeout: float) -> int:
        """Return once the version moved past `seen`, or after `timeout` seconds."""
        if self.version == seen and not self.closing:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass
        return self.version

    async def shut(self) -> None:
        self.closing = True
        await self.notify()
