"""Whether the service could store its latest message: what /healthz says about writes.

The pipeline notes the outcome of every turn it saves (a clock read and an assignment, nothing
more on the message path); /healthz only reads it. A failed save counts for RECENT_SECONDS: a
service that cannot write is reported as such until a save succeeds, or until that long has passed
without any message to try (a load balancer that took it out of rotation then lets it try again).
"""

from __future__ import annotations

import time
from collections.abc import Callable

RECENT_SECONDS = 60.0


class SaveOutcomes:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._saved_at: float | None = None
        self._failed_at: float | None = None
        self.last_error: str | None = None

    def saved(self) -> None:
        self._saved_at = self._clock()

    def failed(self, error: BaseException) -> None:
        self._failed_at = self._clock()
        self.last_error = type(error).__name__

    @property
    def failing(self) -> bool:
        """The latest save failed, less than RECENT_SECONDS ago."""
        if self._failed_at is None or (self._saved_at is not None and self._saved_at > self._failed_at):
            return False
        return self._clock() - self._failed_at < RECENT_SECONDS
