"""WeCom Customer Service's outbound side: capabilities (no passive reply; 5 messages within 48 h
of the customer's last message) and `kf/send_msg` with our own msgid, so a retried send is the
same message, with WeCom's answers turned into neutral outcomes."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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
from bot.channels.wecom.api import SYSTEM_BUSY, WecomApiError, WecomUnavailable
from bot.channels.wecom_kf.api import (
    INVALID_OPEN_KFID,
    SEND_LIMIT,
    SERVICER_INACTIVE,
    SESSION_STATE_INVALID,
    WINDOW_EXPIRED,
    KfApi,
)
from flows.push_window import PushWindow, WindowAction, WindowGrant
from storage.privacy import error_text
from storage.wecom_kf import account_of

# WECHAT.md, kf: at most 5 messages within 48 h of the customer's last message.
PUSH_WINDOW = PushWindow({WindowAction.MESSAGE: WindowGrant(5, timedelta(hours=48)),
                          WindowAction.MENU: WindowGrant(5, timedelta(hours=48))})
CAPABILITIES = Capabilities(passive_reply=False, push_window=PUSH_WINDOW, template_fallback=False,
                            idempotency_keys=True)
_OUTCOMES = {
    SESSION_STATE_INVALID: Delivery.WINDOW_CLOSED,  # a servicer holds the session, or it ended
    WINDOW_EXPIRED: Delivery.WINDOW_CLOSED,
    SEND_LIMIT: Delivery.QUOTA_USED,
    SYSTEM_BUSY: Delivery.RETRY_LATER,
    INVALID_OPEN_KFID: Delivery.REFUSED,
    SERVICER_INACTIVE: Delivery.REFUSED,
}
TEXT_LIMIT = 2048  # bytes of a text message


def wecom_msgid(key: str) -> str:
    """WeCom's msgid (≤ 32 of [0-9a-zA-Z_-]) for an idempotency key: the key itself when it fits."""
    if len(key) <= 32 and all(c.isascii() and (c.isalnum() or c in "_-") for c in key):
        return key
    return "sy" + hashlib.sha256(key.encode()).hexdigest()[:30]


def truncate_bytes(text: str, limit: int = TEXT_LIMIT) -> str:
    raw = text.encode()
    return text if len(raw) <= limit else raw[:limit].decode(errors="ignore")


class WecomKfSender:
    def __init__(self, api: KfApi, sessions: async_sessionmaker[AsyncSession]):
        self._api = api
        self._sessions = sessions

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    async def prepare(self) -> None:
        await self._api.wecom.access_token()

    async def send(self, user_id: str, message: OutboundMessage, *,
                   idempotency_key: str | None = None) -> DeliveryResult:
        open_kfid = await account_of(self._sessions, user_id)
        if open_kfid is None:
            return DeliveryResult(Delivery.REFUSED, "the customer never wrote to a kf account")
        msgid = wecom_msgid(idempotency_key or f"siyu-{uuid.uuid4().hex[:26]}")
        try:
            msgtype, content = _content(message)
            answer = await self._api.send_msg(user_id, open_kfid, msgid, msgtype, content)
        except WecomApiError as error:
            return DeliveryResult(_OUTCOMES.get(error.errcode, Delivery.REFUSED),
                                  f"WeCom errcode {error.errcode}: {error.errmsg}", str(error.errcode))
        except TypeError as error:
            return DeliveryResult(Delivery.REFUSED, str(error))
        except (WecomUnavailable, aiohttp.ClientError, TimeoutError) as error:
            return DeliveryResult(Delivery.RETRY_LATER, error_text(error))
        return DeliveryResult.delivered(str(answer.get("msgid") or msgid))


def _content(message: OutboundMessage) -> tuple[str, dict[str, Any]]:
    if isinstance(message, Text):
        return "text", {"content": truncate_bytes(message.text)}
    if isinstance(message, Image):
        return "image", {"media_id": message.media_id}
    if isinstance(message, News):
        article = dict(message.articles[0]) if message.articles else {}
        return "link", {"title": article.get("title", ""), "desc": article.get("description", ""),
                        "url": article.get("url", ""), "thumb_media_id": article.get("thumb_media_id", "")}
    if isinstance(message, Template):
        raise TypeError("WeCom Customer Service has no template messages")
    raise TypeError(f"cannot send {type(message).__name__}")
