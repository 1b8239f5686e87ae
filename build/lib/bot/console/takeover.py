"""The pipeline middleware of staff takeover: keep the bot quiet while people have a chat, and
escalate when the customer asks for a person, complains, is not understood N times in a row,
or is a VIP. It owns the not-understood streak."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from bot.console.hours import escalation_notice
from bot.console.settings import StaffSettings
from flows import handoff
from flows.handoff import Reason, State
from flows.turn import Next, Turn
from handlers.messages import InboundKind, Reply
from handlers.router import Decision, HandOff, NotUnderstood
from handlers.text import Decoration, fold
from storage.models import Customer

_WORDS = (InboundKind.TEXT, InboundKind.VOICE)


def _normalise(text: str) -> str:
    return fold(text, decoration=Decoration.DROP)


class HandoffMiddleware:
    def __init__(self, settings: StaffSettings, notify: Callable[[], Awaitable[None]] | None = None):
        self._settings = settings
        self._notify = notify
        keywords = sorted({_normalise(k) for k in settings.handoff_keywords if _normalise(k)})
        # One search for every keyword: this runs for every message the bot answers.
        self._keywords = re.compile("|".join(map(re.escape, keywords))) if keywords else None
        self._exact = {_normalise(k) for k in settings.handoff_exact if _normalise(k)}

    async def __call__(self, turn: Turn, next: Next) -> None:
        conversation = turn.conversation
        if conversation.state in handoff.HELD_STATES:
            # People have this chat: store the message, say nothing, show it in the console.
            self._wake(turn)
            return
        vip = self._settings.vip
        if (conversation.state == State.BOT and turn.inbound.kind in _WORDS and vip.escalate == "first_message"
                and conversation.queued_at is None and self.is_vip(turn.customer)):
            await self._escalate(turn, Reason.VIP)
            return
        await next(turn)

    async def act(self, turn: Turn, decision: Decision) -> bool:
        """Hand-off decisions, words that ask for a person whatever else they matched, and the
        not-understood message that ends the bot's part in the chat."""
        conversation = turn.conversation
        if turn.inbound.kind is InboundKind.TEXT:
            understood = not isinstance(decision, NotUnderstood)
            streak = conversation.not_understood_streak
            if streak or not understood:
                conversation.not_understood_streak = 0 if understood else streak + 1
        if conversation.state != State.BOT:
            return False
        if isinstance(decision, HandOff):
            match = decision.match
            turn.replies.extend(decision.replies)
            await self._escalate(turn, Reason.COMPLAINT if match.intent in self._settings.complaint_intents
                                 else Reason.CUSTOMER_REQUEST)
            return True
        if turn.inbound.kind in _WORDS and self.asks_for_person(turn.inbound.text):
            if not isinstance(decision, NotUnderstood):
                turn.replies.extend(decision.replies)
            await self._escalate(turn, Reason.CUSTOMER_REQUEST)
            return True
        if isinstance(decision, NotUnderstood):
            why = self._not_understood_reason(turn)
            # The honest word on what happens next instead of "I did not understand".
            return why is not None and await self._escalate(turn, why)
        return False

    def asks_for_person(self, text: str) -> bool:
        words = _normalise(text)
        return bool(words) and (words in self._exact
                                or (self._keywords is not None and self._keywords.search(words) is not None))

    def is_vip(self, customer: Customer) -> bool:
        vip = self._settings.vip
        tags = set(getattr(customer, "tags", None) or [])
        if vip.tags and tags & set(vip.tags):
            return True
        return bool(vip.min_points) and (getattr(customer, "points_balance", 0) or 0) >= vip.min_points

    def _not_understood_reason(self, turn: Turn) -> Reason | None:
        if turn.conversation.not_understood_streak >= self._settings.not_understood_limit:
            return Reason.NOT_UNDERSTOOD
        if self._settings.vip.escalate == "not_understood" and self.is_vip(turn.customer):
            return Reason.VIP
        return None

    async def _escalate(self, turn: Turn, reason: Reason) -> bool:
        if not await handoff.escalate(turn.session, turn.conversation, reason, "bot", turn.now):
            return False
        turn.replies.append(Reply(escalation_notice(self._settings, turn.now), intent="handoff", source="handoff"))
        self._wake(turn)
        return True

    def _wake(self, turn: Turn) -> None:
        if self._notify is not None:
            turn.after_commit.append(self._notify)
