"""Staff accounts and logins: Argon2 password hashes, database-backed sessions, a throttle.

The session cookie holds a random token; the database keeps only its SHA-256, so a leaked
database does not log anyone in. Each session has its own CSRF token, sent back by the console
page in a header on every change.

Wrong passwords slow the next try down instead of locking anyone out: after `max_failed_logins`
failures from one client address, or for one account name, each further try waits for a delay
that doubles with every failure (an address up to `lockout_minutes`, a name up to
`account_backoff_max_seconds`, so nobody can keep a colleague out for long). The throttle is
checked before any password is hashed, and is the same for names that exist and names that
do not, as are the message and the cost of a wrong password: nothing tells which names exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.console.hashing import HASHER, PasswordChecks, verify_hash
from bot.console.settings import StaffSettings
from storage.staff_models import LoginAttempt, StaffAccount, StaffSession

MIN_PASSWORD = 8


class Role(StrEnum):
    STAFF = "staff"
    OPERATOR = "operator"
    ADMIN = "admin"


_RANK = {Role.STAFF: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def at_least(role: str, required: Role) -> bool:
    return role in _RANK and _RANK[Role(role)] >= _RANK[required]


@dataclass(frozen=True, slots=True)
class Identity:
    staff_id: int
    name: str
    role: str
    csrf_token: str

    @property
    def sees_all(self) -> bool:
        """Operators and admins see and act on every chat; staff on the queue and their own."""
        return at_least(self.role, Role.OPERATOR)


class AccountError(ValueError):
    pass


class LoginRefused(Exception):
    """`retry_after`: seconds until the throttle takes another try (None for a wrong password)."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


WRONG = "用户名或密码错误。"


async def hash_password(password: str) -> str:
    """For `siyu staff add` (a command, not the service: no shared hasher to wait for)."""
    return await asyncio.to_thread(HASHER.hash, password)


async def _verify(password_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_hash, password_hash, password)


def token_hash(token: str) -> str:
    # surrogateescape: a header's bytes that are not UTF-8 arrive escaped, and must hash, not raise.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


async def add_staff(session: AsyncSession, name: str, role: str, password: str, now: datetime) -> StaffAccount:
    name = name.strip()
    if not name or len(name) > 64:
        raise AccountError("name must be 1–64 characters")
    if role not in Role.__members__.values():
        raise AccountError(f"role must be one of {', '.join(r.value for r in Role)}")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password must be at least {MIN_PASSWORD} characters")
    existing = (await session.execute(select(StaffAccount).where(StaffAccount.name == name))).scalar_one_or_none()
    if existing is not None:
        raise AccountError(f"an account named {name!r} already exists")
    account = StaffAccount(name=name, role=role, password_hash=await hash_password(password), active=True,
                           failed_logins=0, created_at=now)
    session.add(account)
    await session.flush()
    return account


def backoff(failures: int, last_failure: datetime | None, now: datetime, settings: StaffSettings,
            cap_seconds: float) -> float:
    """Seconds still to wait after `failures` recent failures, the latest at `last_failure` (None:
    the latest is still being checked, so the wait starts now)."""
    if failures < settings.max_failed_logins:
        return 0.0
    delay = min(settings.login_backoff_seconds * 2 ** (failures - settings.max_failed_logins), cap_seconds)
    return max(0.0, ((last_failure or now) + timedelta(seconds=delay) - now).total_seconds())


async def recent_failures(session: AsyncSession, name: str, remote: str | None, now: datetime,
                          settings: StaffSettings) -> dict[str, tuple[int, datetime | None]]:
    """(failures, latest) within `lockout_minutes`, by throttle key: the address, and the name."""
    since = now - timedelta(minutes=settings.lockout_minutes)
    failed = (LoginAttempt.success.is_(False), LoginAttempt.attempted_at > since)
    found: dict[str, tuple[int, datetime | None]] = {}
    if remote:
        found[f"address:{remote}"] = tuple((await session.execute(  # type: ignore[assignment]
            select(func.count(), func.max(LoginAttempt.attempted_at)).where(LoginAttempt.remote == remote, *failed)
        )).one())
    # A name's failures count from its last successful login: its owner getting in clears them.
    succeeded = (await session.execute(select(func.max(LoginAttempt.attempted_at)).where(
        LoginAttempt.name == name, LoginAttempt.success.is_(True), LoginAttempt.attempted_at > since))).scalar()
    found[f"name:{name}"] = tuple((await session.execute(  # type: ignore[assignment]
        select(func.count(), func.max(LoginAttempt.attempted_at))
        .where(LoginAttempt.name == name, *failed, LoginAttempt.attempted_at > (succeeded or since))
    )).one())
    return found


def throttle_wait(found: dict[str, tuple[int, datetime | None]], checking: Counter[str], now: datetime,
                  settings: StaffSettings) -> float:
    """How long this try must still wait. Tries whose password is being checked count as failures
    (`checking`), so a burst of parallel tries is throttled before any of them is hashed."""
    waits = [0.0]
    for key, (count, last) in found.items():
        cap = settings.lockout_minutes * 60 if key.startswith("address:") else settings.account_backoff_max_seconds
        pending = checking[key]
        waits.append(backoff(count + pending, last if not pending else None, now, settings, cap))
    return max(waits)


async def login(sessions: async_sessionmaker[AsyncSession], checks: PasswordChecks, name: str, password: str,
                remote: str | None, now: datetime, settings: StaffSettings) -> tuple[str, Identity]:
    """Check a password; on success a new session (token for the cookie, identity).

    No transaction is open while the password is hashed; the attempt and the session are written
    after it in one short transaction."""
    name = name.strip()[:64]
    async with sessions() as session:
        found = await recent_failures(session, name, remote, now, settings)
        account = (await session.execute(select(StaffAccount).where(StaffAccount.name == name))).scalar_one_or_none()
    # From the throttle's verdict to counting this try as being checked, nothing awaits: parallel
    # tries in this process each see the ones before them.
    wait = throttle_wait(found, checks.checking, now, settings)
    if wait > 0:
        seconds = math.ceil(wait)
        raise LoginRefused(f"尝试过于频繁，请 {seconds} 秒后再试。", retry_after=seconds)
    checks.checking.update(found.keys())
    try:
        ok = await checks.verify(account.password_hash if account is not None else None, password)
    finally:
        checks.checking.subtract(found.keys())
        for key in found:
            if checks.checking[key] <= 0:
                del checks.checking[key]
    ok = ok and account is not None and account.active
    rehashed = await checks.hash(password) if ok and account is not None and HASHER.check_needs_rehash(
        account.password_hash) else None
    async with sessions() as session, session.begin():
        session.add(LoginAttempt(name=name, remote=remote, success=ok, attempted_at=now))
        if not ok or account is None:
            refused = LoginRefused(WRONG)
        else:
            refused = None
            token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            values = {"last_login_at": now, "failed_logins": 0, "locked_until": None,
                      **({"password_hash": rehashed} if rehashed else {})}
            await session.execute(update(StaffAccount).where(StaffAccount.id == account.id).values(**values))
            session.add(StaffSession(token_hash=token_hash(token), staff_id=account.id, csrf_token=csrf,
                                     created_at=now, expires_at=now + timedelta(hours=settings.session_hours)))
            # Expired sessions of this person go as they log in again.
            await session.execute(delete(StaffSession).where(StaffSession.staff_id == account.id,
                                                             StaffSession.expires_at <= now))
    if refused is not None:
        raise refused
    assert account is not None
    return token, Identity(account.id, account.name, account.role, csrf)


async def identify(session: AsyncSession, token: str | None, now: datetime) -> Identity | None:
    if not token or len(token) > 128:
        return None
    found = (await session.execute(
        select(StaffSession, StaffAccount)
        .join(StaffAccount, StaffAccount.id == StaffSession.staff_id)
        .where(StaffSession.token_hash == token_hash(token), StaffSession.expires_at > now,
               StaffAccount.active.is_(True))
    )).first()
    if found is None:
        return None
    staff_session, account = found
    return Identity(account.id, account.name, account.role, staff_session.csrf_token)


async def logout(session: AsyncSession, token: str) -> None:
    await session.execute(delete(StaffSession).where(StaffSession.token_hash == token_hash(token)))


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and secrets.compare_digest(expected.encode(),
                                                  (given or "").encode("utf-8", "surrogateescape"))
