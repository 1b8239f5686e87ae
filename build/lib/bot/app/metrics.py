"""Prometheus metrics, one registry per app so tests and several apps never share counters;
and the probe that measures how long the event loop is kept from its timers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger(__name__)

LOOP_LAG_INTERVAL_SECONDS = 0.1
LOOP_LAG_WARNING_SECONDS = 1.0


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.inbound = Counter("siyu_inbound_total", "Inbound messages and events",
                               ["channel", "kind"], registry=self.registry)
        self.duplicates = Counter("siyu_inbound_duplicates_total", "Platform retries recognised",
                                  ["channel"], registry=self.registry)
        self.replies = Counter("siyu_replies_total", "Replies by how they were delivered",
                               ["channel", "delivery"], registry=self.registry)
        self.rejected = Counter("siyu_callbacks_rejected_total", "Callbacks refused",
                                ["channel", "reason"], registry=self.registry)
        self.latency = Histogram("siyu_callback_seconds", "Callback handling time", ["channel"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 4.5, 10))
        self.loop_lag = Histogram("siyu_event_loop_lag_seconds",
                                  "How late the event loop woke a 0.1 s timer: the time some work held it",
                                  registry=self.registry,
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


async def watch_loop_lag(observe: Callable[[float], None], interval: float = LOOP_LAG_INTERVAL_SECONDS) -> None:
    """Sleep `interval` again and again and observe how late each wake-up comes: while one piece
    of work holds the event loop every callback, passive reply and timer waits that long."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - started - interval)
        observe(lag)
        if lag >= LOOP_LAG_WARNING_SECONDS:
            log.warning("the event loop was held for %.1f s: every message waited that long", lag)
