"""Staff accounts and logins: Argon2 password hashes, database-backed sessions, lock-out.

The session cookie holds a random token; the database keeps only its SHA-256, so a leaked
database does not log anyone in. Each session has its own CSRF token, sent back by the console
page in a header on every change.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.console.settings import StaffSettings
from storage.staff_models import LoginAttempt, StaffAccount, StaffSession

_HASHER = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) defaults


@functools.cache
def _dummy_hash() -> str:
    """Verified against unknown names so that a wrong name takes as long as a wrong password.

    Computed on the first login, not at import: hashing takes a noticeable moment, and most
    processes that import this module (the CLI, tests) never log anyone in.
    """
    return _HASHER.hash(secrets.token_urlsafe(16))
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
    def __init__(self, message: str, locked: bool = False):
        super().__init__(message)
        self.message = message
        self.locked = locked


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, password)


async def _verify(password_hash: str, password: str) -> bool:
    def check() -> bool:
        try:
            return _HASHER.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


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


async def login(session: AsyncSession, name: str, password: str, remote: str | None, now: datetime,
                settings: StaffSettings) -> tuple[str, Identity]:
    """Check a password; on success a new session (token for the cookie, identity). Commit after."""
    name = name.strip()[:64]
    account = (await session.execute(
        select(StaffAccount).where(StaffAccount.name == name).with_for_update()
    )).scalar_one_or_none()
    if account is not None and account.locked_until is not None and account.locked_until > now:
        session.add(LoginAttempt(name=name, remote=remote, success=False, attempted_at=now))
        minutes = max(1, round((account.locked_until - now).total_seconds() / 60))
        raise LoginRefused(f"登录失败次数过多，账号已锁定，请 {minutes} 分钟后再试。", locked=True)
    ok = await _verify(account.password_hash if account else await asyncio.to_thread(_dummy_hash), password)
    ok = ok and account is not None and account.active
    session.add(LoginAttempt(name=name, remote=remote, success=ok, attempted_at=now))
    if not ok or account is None:
        if account is not None:
            account.failed_logins += 1
            if account.failed_logins >= settings.max_failed_logins:
                account.failed_logins = 0
                account.locked_until = now + timedelta(minutes=settings.lockout_minutes)
                raise LoginRefused(f"登录失败次数过多，账号已锁定 {settings.lockout_minutes} 分钟。", locked=True)
        raise LoginRefused("用户名或密码错误。")
    account.failed_logins = 0
    account.locked_until = None
    account.last_login_at = now
    if _HASHER.check_needs_rehash(account.password_hash):
        account.password_hash = await hash_password(password)
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(StaffSession(token_hash=token_hash(token), staff_id=account.id, csrf_token=csrf, created_at=now,
                             expires_at=now + timedelta(hours=settings.session_hours)))
    # Expired sessions of this person go as they log in again.
    await session.execute(delete(StaffSession).where(StaffSession.staff_id == account.id,
                                                     StaffSession.expires_at <= now))
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
