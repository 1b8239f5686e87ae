"""What the Official Account's and WeCom's APIs share: an access token fetched with the app's
credentials, kept in the database (storage/tokens.py: one process fetches at a time behind a
lease, never holding a transaction while the platform answers), refreshed ahead of expiry and
once when the platform rejects it; JSON POSTs with it in the query string; errors that name the
endpoint's path, never the URL with its credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any, ClassVar

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from storage.privacy import error_text, redact
from storage.tokens import read_token, refresh_token

log = logging.getLogger(__name__)

SYSTEM_BUSY = -1  # "system busy, retry later", on both platforms


class PlatformApiError(Exception):
    """The platform answered with an error code."""

    def __init__(self, errcode: int, errmsg: str, path: str):
        super().__init__(f"{path}: errcode {errcode}: {redact(errmsg)}")
        self.errcode = errcode
        self.errmsg = redact(errmsg)


class PlatformUnavailable(Exception):
    """No usable answer (an HTTP error status, no connection, a timeout, not JSON): the same call
    may well succeed later. Names the endpoint's path only: the query string carries the secret
    or the access token."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


class TokenApi:
    """A platform API client; a subclass names the token endpoint, its parameters and errors."""

    TOKEN_PATH: ClassVar[str]
    TOKEN_ERRORS: ClassVar[frozenset[int]]  # codes that mean "this access token is not valid"
    PLATFORM: ClassVar[str]  # for the log
    api_error: ClassVar[type[PlatformApiError]] = PlatformApiError
    unavailable: ClassVar[type[PlatformUnavailable]] = PlatformUnavailable

    def __init__(self, http: aiohttp.ClientSession, sessions: async_sessionmaker[AsyncSession], clock: Clock, *,
                 base_url: str, token_key: str, token_params: dict[str, str], app: str,
                 refresh_margin_seconds: int = 600, timeout_seconds: float = 10.0):
        self._http = http
        self._sessions = sessions
        self._clock = clock
        self._base_url = base_url.rstrip("/")
        self._token_key = token_key
        self._token_params = token_params
        self._app = app
        self._margin = timedelta(seconds=refresh_margin_seconds)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._token: str | None = None
        self._expires_at = clock.now()
        self._refreshing = asyncio.Lock()

    async def access_token(self, rejected: str | None = None) -> str:
        """A valid token, refreshed `refresh_margin_seconds` before it expires.

        While this process is already refreshing, a token that has not expired yet is used as
        is: nobody waits on the platform for a token they still have.
        """
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
        data = await self._request("GET", self.TOKEN_PATH, params=self._token_params)
        log.info("fetched a new %s access token for %s", self.PLATFORM, self._app)
        return str(data["access_token"]), int(data.get("expires_in", 7200))

    async def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with the access token; a rejected token is refreshed once and the call retried."""
        token = await self.access_token()
        try:
            return await self._post(path, token, payload)
        except PlatformApiError as error:
            if error.errcode not in self.TOKEN_ERRORS:
                raise
            log.warning("%s access token rejected (%s); refreshing once", self.PLATFORM, error.errcode)
            token = await self.access_token(rejected=token)
            return await self._post(path, token, payload)

    async def _post(self, path: str, token: str, payload: dict[str, Any]) -> dict[str, Any]:
        # Raw UTF-8: WeChat shows \u escapes literally in some message types.
        body = json.dumps(payload, ensure_ascii=False).encode()
        return await self._request("POST", path, params={"access_token": token}, data=body,
                                   headers={"Content-Type": "application/json; charset=utf-8"})

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        # aiohttp's errors (an error status, a redirect, a bad payload …) quote the request URL with
        # its credentials: each becomes `unavailable`, naming the path alone, and is not chained.
        try:
            async with self._http.request(method, self._base_url + path, timeout=self._timeout,
                                          allow_redirects=False, **kwargs) as response:
                if not 200 <= response.status < 300:
                    raise self.unavailable(path, f"HTTP {response.status} {response.reason or ''}".rstrip())
                data: dict[str, Any] = await response.json(content_type=None)
        except PlatformUnavailable:
            raise
        except TimeoutError:
            raise self.unavailable(path, f"no answer within {self._timeout.total} s") from None
        except aiohttp.ClientError as error:
            raise self.unavailable(path, error_text(error)) from None
        except ValueError:
            raise self.unavailable(path, "the answer is not JSON") from None
        if not isinstance(data, dict):
            raise self.unavailable(path, "the answer is not a JSON object")
        errcode = int(data.get("errcode", 0) or 0)
        if errcode:
            raise self.api_error(errcode, str(data.get("errmsg", "")), path)
        return data
