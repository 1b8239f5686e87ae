"""Every message that does not ride on a passive reply goes out here, and its fate is recorded."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers.messages import Reply
from storage.conversations import set_delivery
from storage.privacy import mask

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """The platform refused a message; `reason` is short and shown to staff and in reports."""

    def __init__(self, reason: str, code: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.code = code  # the platform's error code, when it gave one


class Sender(Protocol):
    async def send_text(self, user_id: str, text: str) -> None: ...


class TouchSender(Sender, Protocol):
    """A sender that can deliver every touch body (text, news, image) and template messages."""

    async def send(self, user_id: str, body: dict[str, Any]) -> None: ...

    async def send_template(self, user_id: str, template: dict[str, Any]) -> None: ...


class Outbox:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], senders: Mapping[str, Sender]):
        self._sessions = sessions
        self._senders = senders

    async def push(self, channel: str, user_id: str, message_ids: Sequence[int],
                   replies: Sequence[Reply]) -> list[str]:
        """Push stored replies in order; returns the delivery state of each ("push"/"failed")."""
        sender = self._senders.get(channel)
        states: list[str] = []
        for message_id, reply in zip(message_ids, replies, strict=True):
            error: str | None = None
            if sender is None:
                error = f"channel {channel} cannot push messages"
            else:
                try:
                    await sender.send_text(user_id, reply.text)
                except DeliveryError as failure:
                    error = failure.reason
                except Exception as failure:  # noqa: BLE001 - record every failure, never lose it silently
                    error = f"{type(failure).__name__}: {failure}"
            state = "failed" if error else "push"
            if error:
                log.warning("push to %s failed: %s", mask(user_id), error)
            async with self._sessions() as session, session.begin():
                await set_delivery(session, message_id, state, error)
            states.append(state)
        return states
