"""Consent, subscription and the push window on the inbound side: the one place a customer's
subscription changes. 退订 / TD opts out of marketing, 订阅 or any later message opts back in,
follow and unfollow events change `subscribed`, and every customer action opens the window it grants."""

from __future__ import annotations

from collections.abc import Mapping

from flows.push_window import PushWindow, WindowAction, close_window, open_window
from flows.turn import Next, Turn
from handlers.messages import EventKind, Inbound, InboundKind, Reply
from handlers.text import fold
from storage.conversations import log_event
from storage.models import Customer

UNSUBSCRIBE_WORDS = frozenset({"退订", "td"})
SUBSCRIBE_WORDS = frozenset({"订阅"})
_FOLLOW_EVENTS = {EventKind.SUBSCRIBE, EventKind.SCAN}
_LOGGED_EVENTS = {EventKind.SUBSCRIBE, EventKind.UNSUBSCRIBE, EventKind.SCAN}


def source_of(inbound: Inbound) -> str | None:
    """The acquisition source (QR scene / channel code) of a follow or scan."""
    if inbound.event in _FOLLOW_EVENTS and inbound.event_key:
        return inbound.event_key
    return None


class ConsentMiddleware:
    """Records what the inbound says about the customer (last action, unionid, follow/unfollow,
    marketing consent), opens the push window it grants, and answers 退订 / 订阅 itself.

    退订 / TD (exact, any case or width, trimmed) stops marketing touches; 订阅 or any later message
    resubscribes. Follow, unfollow, scan and consent changes go to the event log. `windows` holds
    each channel's declared window rules; a channel without an entry has no window to open.
    """

    def __init__(self, unsubscribe_reply: str, resubscribe_reply: str,
                 windows: Mapping[str, PushWindow] | None = None):
        self._unsubscribe_reply = unsubscribe_reply
        self._resubscribe_reply = resubscribe_reply
        self._windows = dict(windows or {})

    async def __call__(self, turn: Turn, next: Next) -> None:
        inbound, customer = turn.inbound, turn.customer
        _note_arrival(turn, customer, inbound)
        if inbound.kind is InboundKind.EVENT:
            self._follow_events(turn)
            await next(turn)
            return
        if inbound.kind is InboundKind.UNKNOWN:
            await next(turn)
            return
        open_window(customer, WindowAction.MESSAGE, turn.now, self._windows.get(customer.channel))
        word = fold(inbound.text) if inbound.kind is InboundKind.TEXT else ""
        if word in UNSUBSCRIBE_WORDS:
            if not customer.marketing_opt_out:
                self._change(turn, opt_out=True, via=inbound.text.strip())
            turn.replies.append(Reply(self._unsubscribe_reply, intent="unsubscribe", source="consent"))
            return
        if customer.marketing_opt_out:
            self._change(turn, opt_out=False, via=inbound.text.strip() if word in SUBSCRIBE_WORDS else "message")
        if word in SUBSCRIBE_WORDS:
            turn.replies.append(Reply(self._resubscribe_reply, intent="subscribe", source="consent"))
            return
        await next(turn)

    def _follow_events(self, turn: Turn) -> None:
        inbound, customer = turn.inbound, turn.customer
        if inbound.event is EventKind.SUBSCRIBE:
            customer.subscribed = True
            customer.source = customer.source or source_of(inbound)
        elif inbound.event is EventKind.UNSUBSCRIBE:
            customer.subscribed = False
        if inbound.event in _LOGGED_EVENTS:
            log_event(turn.session, customer.id, str(inbound.event), inbound.received_at,
                      {"channel": inbound.channel, "key": inbound.event_key})
        if inbound.event is EventKind.UNSUBSCRIBE:
            close_window(customer)
        elif inbound.event in _FOLLOW_EVENTS:
            open_window(customer, WindowAction.FOLLOW, turn.now, self._windows.get(customer.channel))
        elif inbound.event is EventKind.CLICK:
            open_window(customer, WindowAction.MENU, turn.now, self._windows.get(customer.channel))

    def _change(self, turn: Turn, *, opt_out: bool, via: str) -> None:
        turn.customer.marketing_opt_out = opt_out
        turn.customer.consent_changed_at = turn.now
        log_event(turn.session, turn.customer.id, "marketing_unsubscribed" if opt_out else "marketing_subscribed",
                  turn.now, {"via": via, "channel": turn.inbound.channel})


def _note_arrival(turn: Turn, customer: Customer, inbound: Inbound) -> None:
    customer.last_inbound_at = inbound.received_at
    if inbound.unionid and not customer.unionid:
        customer.unionid = inbound.unionid
