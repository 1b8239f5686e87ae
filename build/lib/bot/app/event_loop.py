"""The event loop `siyu serve` runs on: uvloop by default ([server] event_loop), asyncio's own
where uvloop is not installed (it is not built for Windows) or when the config asks for it.

The service is written against asyncio's API only; uvloop runs the same code on libuv with a
faster loop and socket transports, which is most of what a callback costs besides storing it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

log = logging.getLogger(__name__)

EventLoopName = Literal["uvloop", "asyncio"]


def new_event_loop(wanted: EventLoopName) -> tuple[asyncio.AbstractEventLoop, EventLoopName]:
    """A new loop of the wanted kind, or asyncio's when uvloop cannot be had; and which it is."""
    if wanted == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: the service runs on asyncio's event loop")
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"
