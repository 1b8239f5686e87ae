"""The pipeline stage of staff takeover: keep the bot quiet while people have a chat, and
escalate when the customer asks for a person, complains, is not understood N times in a row,
or is a VIP."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from bot.console.hours import escalation_notice
from bot.console.settings import StaffSettings
from flows import handoff
from flows.handoff import Reason, State
from flows.turn import Turn
from handlers.matching import Action
from handlers.messages import InboundKind, Reply
from handlers.text import Decoration, fold
from storage.models import Customer

_WORDS = (InboundKind.TEXT, InboundKind.VOICE)


def _normalise(text: str) -> str:
    return fold(text, decoration=Decoration.DROP)


class HandoffStage:
    def __init__(self, settings: StaffSettings, notify: Callable[[], Awaitable[None]] | None = None):
        self._settings = settings
        self._notify = notify
        keywords = sorted({_normalise(k) for k in settings.handoff_keywords if _normalise(k)})
        # One search for every keyword: this runs for every message the bot answers.
        self._keywords = re.compile("|".join(map(re.escape, keywords))) if keywords else None
        self._exact = {_normalise(k) for k in settings.handoff_exact if _normalise(k)}

    async def before_route(self, turn: Turn) -> None:
        conversation = turn.conversation
        if conversation.state in handoff.HELD_STATES:
            # People have this chat: store the message, say nothing, show it in the console.
            turn.handled = True
            self._wake(turn)
            return
        vip = self._settings.vip
        if (conversation.state == State.BOT and turn.inbound.kind in _WORDS and vip.escalate == "first_message"
                and conversation.queued_at is None and self.is_vip(turn.customer)):
            turn.handled = True
            await self._escalate(turn, Reason.VIP)

    async def after_route(self, turn: Turn) -> None:
        if turn.handled or turn.conversation.state != State.BOT:
            return
        reason = self._reason(turn)
        if reason is not None:
            await self._escalate(turn, reason)

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

    def _reason(self, turn: Turn) -> Reason | None:
        match = turn.match
        if match is not None and match.action is Action.HANDOFF:
            return Reason.COMPLAINT if match.intent in self._settings.complaint_intents else Reason.CUSTOMER_REQUEST
        if turn.inbound.kind in _WORDS and self.asks_for_person(turn.inbound.text):
            return Reason.CUSTOMER_REQUEST
        if not turn.understood:
            if turn.conversation.not_understood_streak >= self._settings.not_understood_limit:
                return Reason.NOT_UNDERSTOOD
            if self._settings.vip.escalate == "not_understood" and self.is_vip(turn.customer):
                return Reason.VIP
        return None

    async def _escalate(self, turn: Turn, reason: Reason) -> None:
        if not await handoff.escalate(turn.session, turn.conversation, reason, "bot", turn.now):
            return
        # The bot's "I did not understand" is replaced by the honest word on what happens next.
        turn.replies[:] = [r for r in turn.replies if r.source != "fallback"]
        turn.replies.append(Reply(escalation_notice(self._settings, turn.now), intent="handoff", source="handoff"))
        self._wake(turn)

    def _wake(self, turn: Turn) -> None:
        if self._notify is not None:
            turn.after_commit.append(self._notify)
