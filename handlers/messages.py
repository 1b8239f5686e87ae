"""The one inbound type every channel produces and the outgoing values handlers return."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class InboundKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    VOICE = "voice"
    VIDEO = "video"
    SHORTVIDEO = "shortvideo"
    LOCATION = "location"
    LINK = "link"
    EVENT = "event"
    UNKNOWN = "unknown"


class EventKind(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    SCAN = "scan"
    CLICK = "click"
    VIEW = "view"
    LOCATION = "location"
    TEMPLATE_SENT = "templatesendjobfinish"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A customer's message or event, with nothing platform-specific left in it.

    `dedup_key` is unique per channel for one platform delivery (retries share it); `text`
    holds the words to understand (text content, voice recognition, menu key); `payload`
    keeps every platform field for storage.
    """

    channel: str
    user_id: str
    kind: InboundKind
    received_at: datetime
    dedup_key: str | None = None
    text: str = ""
    event: EventKind | None = None
    event_key: str | None = None  # menu key, QR scene (acquisition source), URL
    unionid: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    # The customer record the message belongs to when it is not the sender's own on this channel
    # (a group member linked by unionid to their Official Account customer): (channel, external id).
    account: tuple[str, str] | None = None

    @property
    def customer_key(self) -> tuple[str, str]:
        """(channel, external id) of the customer whose turn this is."""
        return self.account or (self.channel, self.user_id)


@dataclass(frozen=True, slots=True)
class Reply:
    """One text the bot wants the customer to receive."""

    text: str
    intent: str | None = None
    source: str = "bot"
