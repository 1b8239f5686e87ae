"""Repeated errors are logged once with their traceback, then counted.

When the database goes away every request fails the same way, and a traceback per request buries
the log (an 8-second outage once wrote 112,000 lines). This filter, on the service's log handlers,
lets the first error of a kind through whole; while the same error keeps coming it drops the
copies and lets one line through every `interval` seconds saying how many were left out. An
error of a kind not seen for a whole interval is new again and logged with its traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

INTERVAL_SECONDS = 60.0
MAX_KINDS = 1000  # kinds remembered at once; the oldest are forgotten first

Key = tuple[str, str, str, str, int]


@dataclass
class _Seen:
    last: float  # the latest occurrence
    reported: float  # when a line for this kind last went through
    left_out: int = 0


class RepeatedErrors(logging.Filter):
    """A kind is the logger, the message's format, the exception's type and where it was raised."""

    def __init__(self, interval: float = INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._seen: dict[Key, _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[0] is None:
            return True
        key = _kind(record)
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None or now - seen.last >= self._interval:
            self._remember(key, _Seen(last=now, reported=now))
            return True
        seen.last = now
        if now - seen.reported < self._interval:
            seen.left_out += 1
            return False
        # Once an interval: this occurrence as one line, counting those left out before it.
        message = record.getMessage()
        record.msg = (f"{message} [{record.exc_info[0].__name__}, again: {seen.left_out + 1} times in the last "
                      f"{now - seen.reported:.0f} s; its traceback was logged the first time]")
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        seen.left_out = 0
        seen.reported = now
        return True

    def _remember(self, key: Key, seen: _Seen) -> None:
        self._seen.pop(key, None)
        self._seen[key] = seen
        while len(self._seen) > MAX_KINDS:
            del self._seen[next(iter(self._seen))]


def _kind(record: logging.LogRecord) -> Key:
    assert record.exc_info is not None
    kind, _, tb = record.exc_info
    where = _innermost(tb)
    return (record.name, str(record.msg), kind.__name__ if kind else "", where[0], where[1])


def _innermost(tb: TracebackType | None) -> tuple[str, int]:
    if tb is None:
        return "", 0
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename, tb.tb_lineno


def limit_repeated_errors(logger: logging.Logger | None = None, interval: float = INTERVAL_SECONDS) -> None:
    """Put the filter on every handler of `logger` (the root logger by default): a handler's
    filter sees the records of every logger that propagates to it."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RepeatedErrors) for f in handler.filters):
            handler.addFilter(RepeatedErrors(interval))
