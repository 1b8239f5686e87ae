"""Prometheus metrics, one registry per app so tests and several apps never share counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


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
