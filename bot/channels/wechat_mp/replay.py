"""Refuse replayed callbacks. WeChat's plain-mode signature covers the token, timestamp and nonce
but not the body, so a captured signed URL would carry any body for as long as its timestamp is
accepted. Each (timestamp, nonce) is remembered for that long with a hash of its body: the same
body again is WeChat retrying (answered as the first delivery was, by the message id); another
body is a replay. Safe-mode requests are remembered too, so a captured one cannot come back as
plain mode with the `encrypt_type` dropped.

One process on SQLite keeps the pairs in memory; several processes on PostgreSQL or MySQL share
them in `callback_nonces` (one insert-or-check per callback; a sweeper deletes the expired).
"""

from __future__ import annotations

import hashlib
from collections import deque
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.callback_nonces import remember_nonce


class NonceStore(Protocol):
    async def first_body(self, timestamp: int, nonce: str, body_sha256: str, expires_at: datetime,
                         now: datetime) -> str | None:
        """None on a pair's first use; afterwards the hash of the body it first came with."""
        ...


class MemoryNonces:
    """For one process: pairs in a dict, dropped in arrival order once expired."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, str], tuple[str, datetime]] = {}
        self._order: deque[tuple[datetime, tuple[int, str]]] = deque()

    async def first_body(self, timestamp: int, nonce: str, body_sha256: str, expires_at: datetime,
                         now: datetime) -> str | None:
        while self._order and self._order[0][0] < now:
            _, key = self._order.popleft()
            seen = self._seen.get(key)
            if seen is not None and seen[1] < now:
                del self._seen[key]
        key = (timestamp, nonce)
        seen = self._seen.get(key)
        if seen is not None:
            return seen[0]
        self._seen[key] = (body_sha256, expires_at)
        self._order.append((expires_at, key))
        return None


class DatabaseNonces:
    """For several processes: pairs in `callback_nonces`, one insert-or-check each."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], channel: str):
        self._sessions = sessions
        self._channel = channel

    async def first_body(self, timestamp: int, nonce: str, body_sha256: str, expires_at: datetime,
                         now: datetime) -> str | None:
        return await remember_nonce(self._sessions, self._channel, timestamp, nonce, body_sha256, expires_at)


class ReplayGuard:
    def __init__(self, store: NonceStore, tolerance_seconds: int):
        self._store = store
        # A timestamp is accepted while it is at most this far from now, so its pair is kept as long.
        self._keep = timedelta(seconds=tolerance_seconds + 5)

    async def is_replay(self, timestamp: int, nonce: str, body: bytes, now: datetime) -> bool:
        digest = hashlib.sha256(body).hexdigest()
        expires_at = datetime.fromtimestamp(timestamp, now.tzinfo) + self._keep
        first = await self._store.first_body(timestamp, nonce, digest, expires_at, now)
        return first is not None and first != digest


def nonce_store(sessions: async_sessionmaker[AsyncSession], channel: str, url: str) -> NonceStore:
    """In memory for SQLite (one process); in the database for PostgreSQL and MySQL (several)."""
    return MemoryNonces() if url.startswith("sqlite") else DatabaseNonces(sessions, channel)
