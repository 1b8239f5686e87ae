"""Async client for WeCom's API (qyapi): the corp access token shared through the database, and
POSTs with it; the endpoints of each WeCom integration (Customer Service, customer groups) are
named in its own folder.

The token is fetched with `gettoken?corpid=&corpsecret=`, stored like the Official Account's
(storage/tokens.py: one process fetches at a time behind a lease, never holding a transaction
while WeCom answers), refreshed ahead of expiry and once when WeCom rejects it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from storage.privacy import error_text, redact
from storage.tokens import read_token, refresh_token

log = logging.getLogger(__name__)

TOKEN_PATH = "/cgi-bin/gettoken"
TOKEN_ERRORS = frozenset({40014, 42001})  # invalid or expired access_token
SYSTEM_BUSY = -1


class WecomApiError(Exception):
    def __init__(self, errcode: int, errmsg: str, path: str):
        super().__init__(f"{path}: errcode {errcode}: {redact(errmsg)}")
        self.errcode = errcode
        self.errmsg = redact(errmsg)


class WecomUnavailable(Exception):
    """No usable answer (HTTP error, no connection, timeout, not JSON): the call may succeed later.
    Names the endpoint's path only: the query string carries the secret or the token."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


class WecomApi:
    def __init__(self, http: aiohttp.ClientSession, sessions: async_sessionmaker[AsyncSession], clock: Clock,
                 *, base_url: str, corp_id: str, secret: str, refresh_margin_seconds: int = 600,
                 timeout_seconds: float = 10.0):
        self._http = http
        self._sessions = sessions
        self._clock = clock
        self._base_url = base_url.rstrip("/")
        self._corp_id = corp_id
        self._secret = secret
        self._margin = timedelta(seconds=refresh_margin_seconds)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        # One token per corp and secret: each WeCom app's secret has its own token.
        digest = hashlib.sha256(secret.encode()).hexdigest()[:12]
        self._token_key = f"wecom:{corp_id}:{digest}"
        self._token: str | None = None
        self._expires_at = clock.now()
        self._refreshing = asyncio.Lock()

    async def access_token(self, rejected: str | None = None) -> str:
        """A valid token; while this process refreshes, one that has not expired is used as is."""
        now = self._clock.now()
        if self._token and self._token != rejected and self._expires_at - self._margin > now:
            return self._token
        if self._refreshing.locked() and self._token and self._token != rejected and self._expires_at > now:
            return self._token
        async with self._refreshing:
            now = self._clock.now()
            if self._token and self._token != rejected and self._expires_at - self._margin > now:
                return self._token
            stored = await read_token(self._sessions, self._token_key)
            if stored and stored.token and stored.token != rejected and stored.expires_at - self._margin > now:
                row = stored
            else:
                row = await refresh_token(self._sessions, self._token_key, self._fetch_token, now,
                                          fresh_until=now + self._margin, stale_token=rejected)
            self._token, self._expires_at = row.token, row.expires_at
            return row.token

    async def _fetch_token(self) -> tuple[str, int]:
        data = await self._request("GET", TOKEN_PATH, params={"corpid": self._corp_id, "corpsecret": self._secret})
        log.info("fetched a new WeCom access token for %s", self._corp_id)
        return str(data["access_token"]), int(data.get("expires_in", 7200))

    async def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with the access token; a rejected token is refreshed once and the call retried."""
        token = await self.access_token()
        try:
            return await self._post(path, token, payload)
        except WecomApiError as error:
            if error.errcode not in TOKEN_ERRORS:
                raise
            log.warning("WeCom access token rejected (%s); refreshing once", error.errcode)
            token = await self.access_token(rejected=token)
            return await self._post(path, token, payload)

    async def _post(self, path: str, token: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, ensure_ascii=False).encode()
        return await self._request("POST", path, params={"access_token": token}, data=body,
                                   headers={"Content-Type": "application/json; charset=utf-8"})

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        # aiohttp's errors quote the URL with its credentials: each becomes WecomUnavailable,
        # naming the path alone, and is not chained.
        try:
            async with self._http.request(method, self._base_url + path, timeout=self._timeout,
                                          allow_redirects=False, **kwargs) as response:
                if not 200 <= response.status < 300:
                    raise WecomUnavailable(path, f"HTTP {response.status} {response.reason or ''}".rstrip())
                data: dict[str, Any] = await response.json(content_type=None)
        except WecomUnavailable:
            raise
        except TimeoutError:
            raise WecomUnavailable(path, f"no answer within {self._timeout.total} s") from None
        except aiohttp.ClientError as error:
            raise WecomUnavailable(path, error_text(error)) from None
        except ValueError:
            raise WecomUnavailable(path, "the answer is not JSON") from None
        if not isinstance(data, dict):
            raise WecomUnavailable(path, "the answer is not a JSON object")
        errcode = int(data.get("errcode", 0) or 0)
        if errcode:
            raise WecomApiError(errcode, str(data.get("errmsg", "")), path)
        return data
