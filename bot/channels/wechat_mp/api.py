"""Async client for the few Official Account API endpoints Siyu calls.

wechatpy's client is synchronous (requests), so it never runs on the event loop; endpoint
paths and error codes live here and nowhere else. The token and the requests are the platform
client's (bot/channels/platform_api.py), shared with WeCom.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.platform_api import SYSTEM_BUSY, PlatformApiError, PlatformUnavailable, TokenApi
from bot.clock import Clock
from storage.privacy import mask

log = logging.getLogger(__name__)

__all__ = ["SYSTEM_BUSY", "WechatApi", "WechatApiError", "WechatUnavailable"]

TOKEN_PATH = "/cgi-bin/token"
CUSTOM_SEND_PATH = "/cgi-bin/message/custom/send"
TEMPLATE_SEND_PATH = "/cgi-bin/message/template/send"
TOKEN_ERRORS = frozenset({40001, 40014, 42001})  # invalid, malformed or expired access_token
WINDOW_CLOSED = 45015  # 48-hour window expired, or the customer unfollowed
QUOTA_USED = 45047  # the window's message quota is used up


class WechatApiError(PlatformApiError):
    """The Official Account API answered with an error code."""


class WechatUnavailable(PlatformUnavailable):
    """WeChat gave no usable answer; the same call may well succeed later."""


class WechatApi(TokenApi):
    TOKEN_PATH = TOKEN_PATH
    TOKEN_ERRORS = TOKEN_ERRORS
    PLATFORM = "Official Account"
    api_error = WechatApiError
    unavailable = WechatUnavailable

    def __init__(self, http: aiohttp.ClientSession, sessions: async_sessionmaker[AsyncSession], clock: Clock, *,
                 base_url: str, app_id: str, app_secret: str, refresh_margin_seconds: int = 600,
                 timeout_seconds: float = 10.0):
        super().__init__(http, sessions, clock, base_url=base_url, token_key=f"wechat_mp:{app_id}",
                         token_params={"grant_type": "client_credential", "appid": app_id, "secret": app_secret},
                         app=app_id, refresh_margin_seconds=refresh_margin_seconds,
                         timeout_seconds=timeout_seconds)

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
