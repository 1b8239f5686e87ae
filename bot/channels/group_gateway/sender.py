"""What Siyu sends to the gateway's `send_url`, signed like its events: a message into a group,
or to one member privately. 2xx means the gateway took it; anything else is a failed delivery,
tried again like a touch."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
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
from bot.channels.group_gateway.signing import signed_headers

CHANNEL = "group"
# Answers ride in the hook's response, all of them; the gateway has no push window we know of;
# every message carries our id, the same on each attempt, so the gateway can drop a repeat.
CAPABILITIES = Capabilities(passive_reply=True, passive_messages=None, reply_deadline_seconds=None,
                            push_window=None, template_fallback=False, idempotency_keys=True)


class GatewaySender:
    def __init__(self, http: aiohttp.ClientSession, send_url: str, secret: str, timeout_seconds: float = 10.0):
        self._http = http
        self._url = send_url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    async def prepare(self) -> None:
        return None

    async def send(self, user_id: str, message: OutboundMessage, *,
                   idempotency_key: str | None = None) -> DeliveryResult:
        """To one member privately."""
        text = as_text(message)
        if text is None:
            return DeliveryResult(Delivery.REFUSED, f"the group gateway takes text, not {type(message).__name__}")
        return await self._post({"id": _id(idempotency_key), "to": {"user_id": user_id}, "text": text})

    async def post(self, group_id: str, text: str, mention: Sequence[str], *, key: str) -> DeliveryResult:
        """Into a group."""
        return await self._post({"id": _id(key), "group_id": group_id, "text": text, "mention": list(mention)})

    async def _post(self, payload: dict[str, Any]) -> DeliveryResult:
        body = json.dumps(payload, ensure_ascii=False).encode()
        try:
            async with self._http.post(self._url, data=body, headers=signed_headers(self._secret, body),
                                       timeout=self._timeout) as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as error:
            return DeliveryResult(Delivery.RETRY_LATER, f"{type(error).__name__}: {error}".rstrip(": "))
        if 200 <= status < 300:
            return DeliveryResult.delivered(str(payload["id"]))
        return DeliveryResult(Delivery.RETRY_LATER, f"the gateway answered HTTP {status}", str(status))


def as_text(message: OutboundMessage) -> str | None:
    """A message as the gateway's text: an article as its title and link; None for what has no text."""
    if isinstance(message, Text):
        return message.text
    if isinstance(message, News) and message.articles:
        article = message.articles[0]
        return "\n".join(part for part in (article.get("title"), article.get("description"), article.get("url"))
                         if part)
    if isinstance(message, (Image, Template)):
        return None
    return None


def _id(key: str | None) -> str:
    # The outbox's id, the same for every attempt at one message (siyu-m…, siyu-t…, siyu-p…).
    return key or f"siyu-{uuid.uuid4().hex}"
