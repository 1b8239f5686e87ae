"""How every outbound message goes out: in the passive reply slot, or pushed inside the
customer's window, counted against its quota; and what became of each push, recorded.

The answer to an inbound message is split here (`answer`): what the platform's callback carries
and what follows by push once that answer is out. Every push (follow-ups, late answers, staff
replies, wait messages) goes through `deliver`, one message at a time and in order:

1. reserve: under the customer's row lock, check the channel's window; a closed or used-up
   window sends nothing and records why; otherwise count the push against the quota. Commit.
2. call the platform holding no transaction and no lock.
3. record: under the row lock again, the message becomes `push`, or `failed` with the reason
   (and a refused push gives its count back; a window the platform says is closed is closed).

Touches take the same three steps in batches (`bot.outbox.dispatch`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.base import Delivery, DeliveryResult, OutboundMessage, Sender, Text, send_once
from bot.clock import Clock
from bot.pipeline.outcome import Outcome
from flows.push_window import window_remaining
from handlers.messages import Reply
from storage.conversations import lock_customer
from storage.models import Customer
from storage.outgoing import record_delivery
from storage.privacy import error_text, mask, redact

log = logging.getLogger(__name__)

PUSHED = "push"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Push:
    """A stored outgoing message to push."""

    message_id: int
    message: OutboundMessage


@dataclass(frozen=True, slots=True)
class Pushed:
    """What became of one push: its delivery state ("push" or "failed") and, if failed, why."""

    state: str
    reason: str | None = None
    outcome: Delivery | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """An inbound message's answer: the replies its callback's response carries, and the pushes
    that follow once that response is out (all of them when the deadline was missed)."""

    passive: list[Reply]
    follow_ups: list[Push]


@dataclass(frozen=True, slots=True)
class WindowState:
    expires_at: datetime | None
    quota: int
    used: int


def window_after_refusal(current: WindowState, seen_expires_at: datetime | None, reserved: bool,
                         outcome: Delivery) -> WindowState | None:
    """The window to store after a push was refused, or None to leave it as it is.

    A window the customer opened meanwhile (by writing to us) is theirs: no refusal of the old
    one touches it. Otherwise the reservation is given back, and when the platform disagrees with
    our count (closed, used up) we believe it, so we don't knock again.
    """
    if current.expires_at != seen_expires_at:
        return None
    used = max(current.used - reserved, 0)
    if outcome is Delivery.WINDOW_CLOSED:
        return WindowState(None, 0, 0)
    if outcome is Delivery.QUOTA_USED:
        return WindowState(current.expires_at, current.quota, max(current.quota, used))
    return WindowState(current.expires_at, current.quota, used) if reserved else None


def window_refusal(customer: Customer, now: datetime) -> Delivery | None:
    """Why the customer's window takes no push now (closed, or its quota used), or None."""
    if window_remaining(customer, now) != 0:
        return None
    closed = customer.window_expires_at is None or customer.window_expires_at <= now
    return Delivery.WINDOW_CLOSED if closed else Delivery.QUOTA_USED


class Outbox:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], senders: Mapping[str, Sender], clock: Clock):
        self._sessions = sessions
        self._senders = senders
        self._clock = clock

    def answer(self, channel: str, outcome: Outcome, *, in_time: bool) -> Answer:
        """Split an answer between the passive reply slot and pushes, as the channel allows.

        A retried callback (`outcome.duplicate`) is answered as the first delivery was: its
        passive replies again if they went out that way, nothing else (the pushes are the first
        delivery's to send)."""
        sender = self._senders.get(channel)
        fits = sender is not None and sender.capabilities.passive_reply
        limit = sender.capabilities.passive_messages if sender is not None else 1
        if outcome.duplicate:
            passive = outcome.replies if fits and outcome.delivery == "passive" else []
            return Answer(passive[:limit] if limit is not None else passive, [])
        if not (fits and in_time):
            limit = 0
        carried = len(outcome.replies) if limit is None else min(limit, len(outcome.replies))
        return Answer(outcome.replies[:carried],
                      [Push(message_id, Text(reply.text)) for message_id, reply in
                       zip(outcome.message_ids[carried:], outcome.replies[carried:], strict=True)])

    async def deliver(self, channel: str, user_id: str, pushes: Sequence[Push]) -> list[Pushed]:
        """Push stored messages in order, each counted against the window; returns each one's fate."""
        return [await self._deliver_one(channel, user_id, push) for push in pushes]

    async def _deliver_one(self, channel: str, user_id: str, push: Push) -> Pushed:
        sender = self._senders.get(channel)
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            customer = await lock_customer(session, channel, user_id)
            refusal: Pushed | None = None
            if sender is None:
                refusal = Pushed(FAILED, f"channel {channel} cannot push messages", Delivery.REFUSED)
            elif customer is None:
                refusal = Pushed(FAILED, "no such customer", Delivery.REFUSED)
            elif sender.capabilities.push_window is not None:
                closed = window_refusal(customer, now)
                if closed is not None:
                    refusal = Pushed(FAILED, str(closed), closed)
            if refusal is not None:
                await record_delivery(session, push.message_id, FAILED, refusal.reason)
            else:
                assert customer is not None and sender is not None
                counted = sender.capabilities.push_window is not None
                seen = customer.window_expires_at
                if counted:
                    customer.window_used += 1  # taken now, so a concurrent push sees it
                await record_delivery(session, push.message_id, "pending")
        if refusal is not None:
            log.info("push to %s not sent: %s", mask(user_id), refusal.reason)
            return refusal
        assert sender is not None
        try:
            result = await send_once(sender, user_id, push.message, f"siyu-m{push.message_id}")
        except Exception as error:  # noqa: BLE001 - record every failure, never lose it silently
            result = DeliveryResult(Delivery.RETRY_LATER, error_text(error))
        async with self._sessions() as session, session.begin():
            if result.sent:
                await record_delivery(session, push.message_id, PUSHED, platform_message_id=result.platform_message_id)
                return Pushed(PUSHED, outcome=Delivery.SENT)
            customer = await lock_customer(session, channel, user_id)
            if customer is not None:
                current = WindowState(customer.window_expires_at, customer.window_quota, customer.window_used)
                window = window_after_refusal(current, seen, counted, result.outcome)
                if window is not None:
                    customer.window_expires_at, customer.window_quota, customer.window_used = (
                        window.expires_at, window.quota, window.used)
            reason = redact(result.record())
            await record_delivery(session, push.message_id, FAILED, reason)
        log.warning("push to %s failed: %s", mask(user_id), reason)
        return Pushed(FAILED, reason, result.outcome)
