"""Consent and the push window on the inbound side: 退订 / TD opts out of marketing, 订阅 or any
later message opts back in, and every customer action opens the window it grants."""

from __future__ import annotations

from collections.abc import Mapping

from flows.push_window import PushWindow, WindowAction, close_window, open_window
from flows.turn import Turn
from handlers.messages import EventKind, InboundKind, Reply
from handlers.text import fold
from storage.conversations import log_event

UNSUBSCRIBE_WORDS = frozenset({"退订", "td"})
SUBSCRIBE_WORDS = frozenset({"订阅"})
_FOLLOW_EVENTS = {EventKind.SUBSCRIBE, EventKind.SCAN}


class ConsentAndWindowStage:
    """Pipeline stage: opens the push window each customer action grants, and handles 退订/订阅.

    退订 / TD (exact, any case or width, trimmed) stops marketing touches; 订阅 or any later message
    resubscribes. Consent changes go to the event log. `windows` holds each channel's declared
    window rules; a channel without an entry has no window to open.
    """

    def __init__(self, unsubscribe_reply: str, resubscribe_reply: str,
                 windows: Mapping[str, PushWindow] | None = None):
        self._unsubscribe_reply = unsubscribe_reply
        self._resubscribe_reply = resubscribe_reply
        self._windows = dict(windows or {})

    async def before_route(self, turn: Turn) -> None:
        inbound, customer = turn.inbound, turn.customer
        rules = self._windows.get(customer.channel)
        if inbound.kind is InboundKind.EVENT:
            if inbound.event is EventKind.UNSUBSCRIBE:
                close_window(customer)
            elif inbound.event in _FOLLOW_EVENTS:
                open_window(customer, WindowAction.FOLLOW, turn.now, rules)
            elif inbound.event is EventKind.CLICK:
                open_window(customer, WindowAction.MENU, turn.now, rules)
            return
        if inbound.kind is InboundKind.UNKNOWN:
            return
        open_window(customer, WindowAction.MESSAGE, turn.now, rules)
        word = fold(inbound.text) if inbound.kind is InboundKind.TEXT else ""
        if word in UNSUBSCRIBE_WORDS:
            if not customer.marketing_opt_out:
                self._change(turn, opt_out=True, via=inbound.text.strip())
            turn.replies.append(Reply(self._unsubscribe_reply, intent="unsubscribe", source="consent"))
            turn.handled = True
            return
        if customer.marketing_opt_out:
            self._change(turn, opt_out=False, via=inbound.text.strip() if word in SUBSCRIBE_WORDS else "message")
        if word in SUBSCRIBE_WORDS:
            turn.replies.append(Reply(self._resubscribe_reply, intent="subscribe", source="consent"))
            turn.handled = True

    async def after_route(self, turn: Turn) -> None:
        return None

    def _change(self, turn: Turn, *, opt_out: bool, via: str) -> None:
        turn.customer.marketing_opt_out = opt_out
        turn.customer.consent_changed_at = turn.now
        log_event(turn.session, turn.customer.id, "marketing_unsubscribed" if opt_out else "marketing_subscribed",
                  turn.now, {"via": via, "channel": turn.inbound.channel})
