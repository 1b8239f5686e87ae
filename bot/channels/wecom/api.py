"""Async client for WeCom's API (qyapi): the corp access token shared through the database, and
POSTs with it (bot/channels/platform_api.py, like the Official Account's); the endpoints of each
WeCom integration (Customer Service, customer groups) are named in its own folder.

The token is fetched with `gettoken?corpid=&corpsecret=`; each app's secret has its own token.
"""

from __future__ import annotations

import hashlib

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.platform_api import SYSTEM_BUSY, PlatformApiError, PlatformUnavailable, TokenApi
from bot.clock import Clock

__all__ = ["SYSTEM_BUSY", "WecomApi", "WecomApiError", "WecomUnavailable"]

TOKEN_PATH = "/cgi-bin/gettoken"
TOKEN_ERRORS = frozenset({40014, 42001})  # invalid or expired access_token


class WecomApiError(PlatformApiError):
    """WeCom answered with an error code."""


class WecomUnavailable(PlatformUnavailable):
    """No usable answer from WeCom; the call may succeed later."""


class WecomApi(TokenApi):
    TOKEN_PATH = TOKEN_PATH
    TOKEN_ERRORS = TOKEN_ERRORS
    PLATFORM = "WeCom"
    api_error = WecomApiError
    unavailable = WecomUnavailable

    def __init__(self, http: aiohttp.ClientSession, sessions: async_sessionmaker[AsyncSession], clock: Clock,
                 *, base_url: str, corp_id: str, secret: str, refresh_margin_seconds: int = 600,
                 timeout_seconds: float = 10.0):
        digest = hashlib.sha256(secret.encode()).hexdigest()[:12]
        super().__init__(http, sessions, clock, base_url=base_url, token_key=f"wecom:{corp_id}:{digest}",
                         token_params={"corpid": corp_id, "corpsecret": secret}, app=corp_id,
                         refresh_margin_seconds=refresh_margin_seconds, timeout_seconds=timeout_seconds)
