"""The Official Account's outbound side: its capabilities, and every message kind through one
`send`, with WeChat's answers (error codes, transport failures) turned into neutral outcomes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import aiohttp

from bot.channels.base import (
    Capabilities,
    Delivery,
    DeliveryResult,
    Image,
    News,
    OutboundMessage,
    Template,
    Text,
)
from bot.channels.wechat_mp.api import (
    QUOTA_USED,
    SYSTEM_BUSY,
    WINDOW_CLOSED,
    WechatApi,
    WechatApiError,
)
from flows.push_window import UNLIMITED, PushWindow, WindowAction, WindowGrant

CHANNEL = "wechat_mp"

# WECHAT.md, Sending (official doc since 2023-06-12).
PUSH_WINDOW = PushWindow({
    WindowAction.MESSAGE: WindowGrant(5, timedelta(hours=48)),
    WindowAction.MENU: WindowGrant(3, timedelta(minutes=1)),
    WindowAction.FOLLOW: WindowGrant(3, timedelta(minutes=1)),
    WindowAction.PAYMENT: WindowGrant(UNLIMITED, timedelta(hours=48)),
})
_WINDOW_OUTCOMES = {WINDOW_CLOSED: Delivery.WINDOW_CLOSED, QUOTA_USED: Delivery.QUOTA_USED}


def capabilities(reply_deadline_seconds: float) -> Capabilities:
    """WeChat waits for a callback's answer (one passive message), grants push windows, and has
    template messages for service notices."""
    return Capabilities(passive_reply=True, passive_messages=1, reply_deadline_seconds=reply_deadline_seconds,
                        push_window=PUSH_WINDOW, template_fallback=True)


class WechatMpSender:
    """Pushes through the customer-service and template message APIs."""

    def __init__(self, api: WechatApi, reply_deadline_seconds: float = 4.5):
        self._api = api
        self._capabilities = capabilities(reply_deadline_seconds)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def prepare(self) -> None:
        """Fetch the access token now, so sending under a database transaction never has to."""
        await self._api.access_token()

    async def send(self, user_id: str, message: OutboundMessage) -> DeliveryResult:
        try:
            answer = await self._call(user_id, message)
        except WechatApiError as error:
            reason = f"WeChat errcode {error.errcode}: {error.errmsg}"
            if error.errcode in _WINDOW_OUTCOMES:
                outcome = _WINDOW_OUTCOMES[error.errcode]
            elif error.errcode == SYSTEM_BUSY:
                outcome = Delivery.RETRY_LATER
            else:
                outcome = Delivery.REFUSED
            return DeliveryResult(outcome, reason, str(error.errcode))
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            # A gateway error or a timeout: WeChat may well take the same call later.
            return DeliveryResult(Delivery.RETRY_LATER, f"{type(error).__name__}: {error}".rstrip(": "))
        msgid = answer.get("msgid")
        return DeliveryResult.delivered(str(msgid) if msgid is not None else None)

    async def _call(self, user_id: str, message: OutboundMessage) -> dict[str, Any]:
        if isinstance(message, Text):
            return await self._api.send_custom(user_id, "text", {"content": message.text})
        if isinstance(message, News):
            return await self._api.send_custom(user_id, "news", {"articles": [dict(a) for a in message.articles]})
        if isinstance(message, Image):
            return await self._api.send_custom(user_id, "image", {"media_id": message.media_id})
        if isinstance(message, Template):
            return await self._api.send_template(user_id, message.template_id, dict(message.data), message.url)
        raise TypeError(f"cannot send {type(message).__name__}")
