"""Argon2 for console logins, one hash at a time per process.

Each check costs a few hundred milliseconds of CPU. Run freely in threads, a flood of logins takes
every core the customers' messages need, so checks queue for one worker thread here, and past a
small queue a login is refused at once (the throttle in auth.py refuses most floods before that).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as MetricCounter

HASHER = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) defaults
MAX_WAITING = 8


class HasherBusy(Exception):
    """More logins wait for the hasher than it takes on: try again in a moment."""


def verify_hash(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class PasswordChecks:
    """The process's password hasher: one worker thread, a bounded queue, and a dummy hash that
    unknown names are checked against so they cost what a known name costs."""

    def __init__(self, registry: CollectorRegistry | None = None, max_waiting: int = MAX_WAITING):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2")
        self._max_waiting = max_waiting
        self._pending = 0
        self._dummy: str | None = None
        # Login tries whose password is being checked now, by throttle key (address, name).
        self.checking: Counter[str] = Counter()
        self.checks = MetricCounter("siyu_console_password_checks", "Argon2 password checks run for console logins",
                              registry=registry)

    async def _run(self, function, *args):  # type: ignore[no-untyped-def]
        if self._pending >= self._max_waiting + 1:
            raise HasherBusy(f"{self._pending} password checks are waiting")
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            self._pending -= 1

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether the password matches; `None` (no such account) checks the dummy hash instead."""
        if password_hash is None:
            if self._dummy is None:
                self._dummy = await self._run(HASHER.hash, secrets.token_urlsafe(16))
            password_hash = self._dummy
        self.checks.inc()
        return bool(await self._run(verify_hash, password_hash, password))

    async def hash(self, password: str) -> str:
        return str(await self._run(HASHER.hash, password))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
