"""Platform access tokens kept in the database so every process uses the same one.

A refresh never holds a transaction or a row lock while the platform answers: a short
transaction takes a lease on the token row ("I am fetching until T"), the fetch runs with no
transaction open, and the new token is written only if the lease is still ours. While one
process holds the lease, the others keep using the token they have if it has not expired, or
re-read the row until the new one is there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import PlatformToken
from storage.upsert import insert_ignore
from storage.workers import lease_holder

log = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[tuple[str, int]]]  # -> (token, lifetime in seconds)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Longer than the platform call's timeout (10 s), so a lease never runs out under a fetch that is
# still going; a process that died mid-fetch frees it after this long.
REFRESH_LEASE = timedelta(seconds=30)
POLL_SECONDS = 0.1  # how often a process waiting for another's fetch re-reads the row


class TokenUnavailable(RuntimeError):
    """No usable token: another process holds the refresh lease and has not stored a new one."""


async def read_token(sessions: async_sessionmaker[AsyncSession], key: str) -> PlatformToken | None:
    async with sessions() as session:
        return await session.get(PlatformToken, key)


def _usable(row: PlatformToken | None, after: datetime, stale_token: str | None) -> bool:
    return row is not None and bool(row.token) and row.token != stale_token and row.expires_at > after


async def refresh_token(
    sessions: async_sessionmaker[AsyncSession],
    key: str,
    fetch: Fetch,
    now: datetime,
    fresh_until: datetime,
    stale_token: str | None = None,
    *,
    lease: timedelta = REFRESH_LEASE,
) -> PlatformToken:
    """A token valid past `fresh_until`, fetched unless another process already stored one.

    One process fetches at a time (the platform invalidates the previous token on each fetch).
    `stale_token` is a token the platform just rejected: never reuse it. While another process
    fetches, a stored token that has not expired yet (and was not rejected) is returned as is;
    otherwise this waits for theirs, and takes the lease itself if theirs runs out. `now` is the
    caller's clock reading; time spent waiting here is added to it.
    """
    async with sessions() as session, session.begin():
        dialect = session.get_bind().dialect.name
        await session.execute(insert_ignore(dialect, PlatformToken, {
            "key": key, "token": "", "expires_at": _EPOCH, "updated_at": now,
        }))
    holder = lease_holder()
    loop = asyncio.get_running_loop()
    started = loop.time()
    waited_for: str | None = None
    while True:
        current = now + timedelta(seconds=loop.time() - started)
        row = await read_token(sessions, key)
        if _usable(row, fresh_until, stale_token):
            assert row is not None
            return row
        if await _take_lease(sessions, key, holder, current, fresh_until, stale_token, lease):
            return await _fetch_and_store(sessions, key, holder, fetch, current)
        row = await read_token(sessions, key)
        if _usable(row, fresh_until, stale_token):
            assert row is not None
            return row
        if _usable(row, current, stale_token):
            assert row is not None
            return row  # not fresh, but still valid: use it while the other process fetches
        if row is not None and row.refreshing_by != waited_for:
            waited_for = row.refreshing_by
            log.info("waiting for %s to fetch the access token for %s", waited_for, key)
        if loop.time() - started > 2 * lease.total_seconds():
            raise TokenUnavailable(f"no access token for {key}: another process holds the refresh")
        await asyncio.sleep(POLL_SECONDS)


def _still_stale(fresh_until: datetime, stale_token: str | None) -> ColumnElement[bool]:
    stale = or_(PlatformToken.token == "", PlatformToken.expires_at <= fresh_until)
    return stale if stale_token is None else or_(stale, PlatformToken.token == stale_token)


async def _take_lease(sessions: async_sessionmaker[AsyncSession], key: str, holder: str, now: datetime,
                      fresh_until: datetime, stale_token: str | None, lease: timedelta) -> bool:
    """Claim the refresh, unless a fresh token landed meanwhile or another lease is running."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(PlatformToken)
            .where(PlatformToken.key == key, _still_stale(fresh_until, stale_token),
                   or_(PlatformToken.refreshing_until.is_(None), PlatformToken.refreshing_until < now))
            .values(refreshing_by=holder, refreshing_until=now + lease)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def _fetch_and_store(sessions: async_sessionmaker[AsyncSession], key: str, holder: str,
                           fetch: Fetch, now: datetime) -> PlatformToken:
    try:
        token, lifetime = await fetch()  # no transaction open: the platform may take its time
    except BaseException:
        await _release_lease(sessions, key, holder)
        raise
    ours = and_(PlatformToken.key == key, PlatformToken.refreshing_by == holder)
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(PlatformToken).where(ours)
            .values(token=token, expires_at=now + timedelta(seconds=lifetime), updated_at=now,
                    refreshing_by=None, refreshing_until=None)
            .execution_options(synchronize_session=False)
        )
        stored = bool(result.rowcount)  # type: ignore[attr-defined]
    if not stored:
        # Our lease ran out and another process took over: its token is the newest one.
        log.warning("refresh lease for %s was lost; using the token stored by the other process", key)
    row = await read_token(sessions, key)
    if row is None:
        raise TokenUnavailable(f"access token row {key} disappeared")
    return row


async def _release_lease(sessions: async_sessionmaker[AsyncSession], key: str, holder: str) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(PlatformToken).where(PlatformToken.key == key, PlatformToken.refreshing_by == holder)
            .values(refreshing_by=None, refreshing_until=None)
            .execution_options(synchronize_session=False)
        )
