"""Platform access tokens kept in the database so every process uses the same one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import PlatformToken
from storage.upsert import insert_ignore

Fetch = Callable[[], Awaitable[tuple[str, int]]]  # -> (token, lifetime in seconds)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def read_token(sessions: async_sessionmaker[AsyncSession], key: str) -> PlatformToken | None:
    async with sessions() as session:
        return await session.get(PlatformToken, key)


async def refresh_token(
    sessions: async_sessionmaker[AsyncSession],
    key: str,
    fetch: Fetch,
    now: datetime,
    fresh_until: datetime,
    stale_token: str | None = None,
) -> PlatformToken:
    """Fetch a new token unless another process already stored one valid past `fresh_until`.

    The row is locked while fetching, so processes never fetch at once and invalidate each
    other's tokens. `stale_token` is a token the platform just rejected: never reuse it.
    """
    async with sessions() as session, session.begin():
        # Its own transaction: on MySQL, INSERT IGNORE's shared lock followed by FOR UPDATE in
        # one transaction deadlocks two processes against each other.
        dialect = session.get_bind().dialect.name
        await session.execute(insert_ignore(dialect, PlatformToken, {
            "key": key, "token": "", "expires_at": _EPOCH, "updated_at": now,
        }))
    async with sessions() as session, session.begin():
        row = (
            await session.execute(select(PlatformToken).where(PlatformToken.key == key).with_for_update())
        ).scalar_one()
        if row.token and row.token != stale_token and row.expires_at > fresh_until:
            return row
        token, lifetime = await fetch()
        row.token = token
        row.expires_at = now + timedelta(seconds=lifetime)
        row.updated_at = now
        return row
