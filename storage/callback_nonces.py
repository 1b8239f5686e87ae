"""Signed callbacks' (timestamp, nonce) pairs, shared by every process while their signature is
still accepted: one insert-or-check per callback, and a sweep of the expired ones."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import CallbackNonce
from storage.upsert import insert_ignore


async def remember_nonce(sessions: async_sessionmaker[AsyncSession], channel: str, timestamp: int, nonce: str,
                         body_sha256: str, expires_at: datetime) -> str | None:
    """Record a pair's first use and return None; on a later use, the body hash it came with first."""
    async with sessions() as session, session.begin():
        dialect = session.get_bind().dialect.name
        inserted = await session.execute(insert_ignore(dialect, CallbackNonce, {
            "channel": channel, "timestamp": timestamp, "nonce": nonce, "body_sha256": body_sha256,
            "expires_at": expires_at}))
        if inserted.rowcount:  # type: ignore[attr-defined]
            return None
        first = (await session.execute(select(CallbackNonce.body_sha256).where(
            CallbackNonce.channel == channel, CallbackNonce.timestamp == timestamp, CallbackNonce.nonce == nonce,
        ))).scalar_one_or_none()
    return first if first is not None else body_sha256  # swept meanwhile: expired, refused by its timestamp


async def forget_expired_nonces(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    async with sessions() as session, session.begin():
        result = await session.execute(delete(CallbackNonce).where(CallbackNonce.expires_at < now)
                                       .execution_options(synchronize_session=False))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
