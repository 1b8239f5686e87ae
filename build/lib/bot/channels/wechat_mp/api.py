"""Async client for the few Official Account API endpoints Siyu calls.

wechatpy's client is synchronous (requests), so it never runs on the event loop; endpoint
paths and error codes live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from storage.privacy import mask
from storage.tokens import read_token, refresh_token

log = logging.getLogger(__name__)

TOKEN_PATH = "/cgi-bin/token"
CUSTOM_SEND_PATH = "/cgi-bin/message/custom/send"
TEMPLATE_SEND_PATH = "/cgi-bin/message/template/send"
TOKEN_ERRORS = frozenset({40001, 40014, 42001})  # invalid, malformed or expired access_token
WINDOW_CLOSED = 45015  # 48-hour window expired, or the customer unfollowed
QUOTA_USED = 45047  # the window's message quota is used up
SYSTEM_BUSY = -1  # "system busy, retry later"


class WechatApiError(Exception):
    def __init__(self, errcode: int, errmsg: str, path: str):
        super().__init__(f"{path}: errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WechatApi:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        base_url: str,
        app_id: str,
        app_secret: str,
        refresh_margin_seconds: int = 600,
        timeout_seconds: float = 10.0,
    ):
        self._http = http
        self._sessions = sessions
        self._clock = clock
        self._base_url = base_url.rstrip("/")
        self._app_id = app_id
        self._app_secret = app_secret
        self._margin = timedelta(seconds=refresh_margin_seconds)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._token_key = f"wechat_mp:{app_id}"
        self._token: str | None = None
        self._expires_at = self._clock.now()
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
        params = {"grant_type": "client_credential", "appid": self._app_id, "secret": self._app_secret}
        data = await self._request("GET", TOKEN_PATH, params=params)
        log.info("fetched a new access token for %s", self._app_id)
        return str(data["access_token"]), int(data.get("expires_in", 7200))

    async def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with the access token; a rejected token is refreshed once and the call retried."""
        token = await self.access_token()
        try:
            return await self._post(path, token, payload)
        except WechatApiError as error:
            if error.errcode not in TOKEN_ERRORS:
                raise
            log.warning("access token rejected (%s); refreshing once", error.errcode)
            token = await self.access_token(rejected=token)
            return await self._post(path, token, payload)

    async def _post(self, path: str, token: str, payload: dict[str, Any]) -> dict[str, Any]:
        # Raw UTF-8: WeChat shows \u escapes literally in some message types.
        body = json.dumps(payload, ensure_ascii=False).encode()
        return await self._request("POST", path, params={"access_token": token}, data=body,
                                   headers={"Content-Type": "application/json; charset=utf-8"})

    async def send_custom(self, openid: str, msgtype: str, content: dict[str, Any]) -> dict[str, Any]:
        """A customer-service message (text, news, image); needs the customer's window to be open."""
        data = await self.call(CUSTOM_SEND_PATH, {"touser": openid, "msgtype": msgtype, msgtype: content})
        log.debug("pushed a %s to %s", msgtype, mask(openid))
        return data

    async def send_template(self, openid: str, template_id: str, data: dict[str, str],
                            url: str | None = None) -> dict[str, Any]:
        """A template message (service notices only; no window needed)."""
        payload: dict[str, Any] = {
            "touser": openid, "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
        }
        if url:
            payload["url"] = url
        answer = await self.call(TEMPLATE_SEND_PATH, payload)
        log.debug("sent template %s to %s", template_id, mask(openid))
        return answer

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with self._http.request(method, self._base_url + path, timeout=self._timeout, **kwargs) as response:
            response.raise_for_status()
            data: dict[str, Any] = await response.json(content_type=None)
        errcode = int(data.get("errcode", 0) or 0)
        if errcode:
            raise WechatApiError(errcode, str(data.get("errmsg", "")), path)
        return data
