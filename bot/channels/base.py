"""What every channel declares and how the outbox sends through it, in platform-neutral terms.

A channel's folder translates: platform input into `Inbound`, an `OutboundMessage` into the
platform's call, the platform's answer into a `DeliveryResult`. Platform error codes never
leave the folder; the outbox and the touch dispatch act on `Delivery` outcomes only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from flows.push_window import PushWindow

# ---- what a channel can do ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the platform lets a brand do, as the outbox must respect it.

    passive_reply: the answer to the platform's callback may carry replies (`passive_messages`
    of them, None: all); the rest, and everything when this is False, is pushed.
    reply_deadline_seconds: how long the platform waits for that answer (None: it waits).
    push_window: which customer actions open a window for how many pushes (None: pushes need no
    window and are not counted).
    template_fallback: outside the window a service touch may go out as its template message.
    idempotency_keys: the platform takes our own id per message, so `send` is given one
    (`idempotency_key`, the same on every retry of that message) and a retry is never delivered twice.
    """

    passive_reply: bool = False
    passive_messages: int | None = 1
    reply_deadline_seconds: float | None = None
    push_window: PushWindow | None = None
    template_fallback: bool = False
    idempotency_keys: bool = False


# ---- what goes out --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class News:
    """One article card; the article's fields (title, url, and optionally description, picurl)."""

    articles: tuple[Mapping[str, str], ...]


@dataclass(frozen=True, slots=True)
class Image:
    media_id: str


@dataclass(frozen=True, slots=True)
class Template:
    """A service notice outside the window: the template's id, its keyword values, a link."""

    template_id: str
    data: Mapping[str, str]
    url: str | None = None


OutboundMessage = Text | News | Image | Template


def body_message(body: Mapping[str, Any]) -> OutboundMessage:
    """A stored touch body (`{"type": "text" | "news" | "image", …}`) as the message to send."""
    kind = body["type"]
    if kind == "text":
        return Text(str(body["text"]))
    if kind == "news":
        return News(tuple(dict(article) for article in body["articles"]))
    if kind == "image":
        return Image(str(body["media_id"]))
    raise ValueError(f"cannot send a {kind!r} body")


def template_message(template: Mapping[str, Any]) -> Template:
    """A stored touch template (`{"template_id", "data", "url"}`) as the message to send."""
    return Template(str(template["template_id"]), {str(k): str(v) for k, v in template["data"].items()},
                    template.get("url") or None)


# ---- what became of it ----------------------------------------------------------------------


class Delivery(StrEnum):
    SENT = "sent"
    WINDOW_CLOSED = "window_closed"  # the platform says no window is open (expired, or unfollowed)
    QUOTA_USED = "window_quota_used"  # the open window's messages are used up
    RETRY_LATER = "retry_later"  # a passing failure (network, platform busy): the same call may succeed later
    REFUSED = "refused"  # the platform will not take this message; trying again changes nothing


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The platform's answer to one send, in neutral terms.

    reason: short, for staff and reports (what the platform said). code: the platform's own
    error code as text, recorded beside the outcome and never interpreted outside the channel.
    """

    outcome: Delivery
    reason: str | None = None
    code: str | None = None
    platform_message_id: str | None = None

    @property
    def sent(self) -> bool:
        return self.outcome is Delivery.SENT

    @classmethod
    def delivered(cls, platform_message_id: str | None = None) -> DeliveryResult:
        return cls(Delivery.SENT, platform_message_id=platform_message_id)

    def record(self) -> str:
        """The outcome as stored on a refused message or touch: the reason, or the outcome's name."""
        if self.outcome in (Delivery.WINDOW_CLOSED, Delivery.QUOTA_USED) and self.code:
            return f"{self.outcome} ({self.code})"
        return self.reason or str(self.outcome)


# ---- how it goes out ------------------------------------------------------------------------


class Sender(Protocol):
    """A channel's outbound side: what it can do, and one way to send every kind of message."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def prepare(self) -> None:
        """Get ready to send (credentials), so no send waits for that while others wait on it."""
        ...

    async def send(self, user_id: str, message: OutboundMessage) -> DeliveryResult:
        """Send one message; every platform answer is a result, never an exception. A sender
        whose capabilities say `idempotency_keys` also takes `idempotency_key=` (a short
        [0-9a-zA-Z_-] id)."""
        ...


async def send_once(sender: Sender, user_id: str, message: OutboundMessage, key: str) -> DeliveryResult:
    """`sender.send`, with `key` as the message's idempotency key where the platform takes one."""
    if sender.capabilities.idempotency_keys:
        return await sender.send(user_id, message, idempotency_key=key)  # type: ignore[call-arg]
    return await sender.send(user_id, message)

