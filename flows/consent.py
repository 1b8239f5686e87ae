"""Consent, subscription and the push window on the inbound side: the one place a customer's
subscription changes. 退订 / TD / 取消订阅 and intents with `action = "opt_out"` opt out of
marketing; 订阅, `action = "opt_in"` or any later message opt back in; follow and unfollow events
change `subscribed`, and every customer action opens the window it grants."""

from __future__ import annotations

import re
from collections.abc import Mapping

from flows.push_window import PushWindow, WindowAction, close_window, open_window
from flows.reactions import NoReactions, Reactions
from flows.turn import Next, Turn
from handlers.messages import EventKind, Inbound, InboundKind, Reply
from handlers.router import ChangeConsent, Decision
from handlers.text import fold
from storage.conversations import log_event
from storage.models import Customer

UNSUBSCRIBE_WORDS = frozenset({"退订", "td", "取消订阅"})
SUBSCRIBE_WORDS = frozenset({"订阅"})
_FOLLOW_EVENTS = {EventKind.SUBSCRIBE, EventKind.SCAN}
_LOGGED_EVENTS = {EventKind.SUBSCRIBE, EventKind.UNSUBSCRIBE, EventKind.SCAN}
# Replies that tell the customer their consent changed ("已为您退订", "订阅成功" …).
_PROMISES_OPT_OUT = re.compile(r"已(?:经|为您|帮您|给您)?(?:成功)?(?:退订|取消订阅)|(?:退订|取消订阅)成功")
_PROMISES_OPT_IN = re.compile(r"已(?:经|为您|帮您|给您)?(?:成功)?(?:重新)?订阅|订阅成功")
# What flows see when the customer opts out: a flow with `exit_on = ["unsubscribe"]` ends.
OPT_OUT_EVENT = "unsubscribe"


def promised_change(reply: str) -> bool | None:
    """Whether a reply tells the customer they are opted out (True) or back in (False); None when
    it promises neither. For `check-config`: such a reply must come with the action itself."""
    if _PROMISES_OPT_OUT.search(reply):
        return True
    if _PROMISES_OPT_IN.search(reply):
        return False
    return None


def source_of(inbound: Inbound) -> str | None:
    """The acquisition source (QR scene / channel code) of a follow or scan."""
    if inbound.event in _FOLLOW_EVENTS and inbound.event_key:
        return inbound.event_key
    return None


class ConsentMiddleware:
    """Records what the inbound says about the customer (last action, unionid, follow/unfollow,
    marketing consent), opens the push window it grants, and answers 退订 / 订阅 itself.

    退订 / TD / 取消订阅 (exact, any case or width, trimmed) stops marketing touches and ends the
    flows that exit on "unsubscribe"; 订阅 or any later message resubscribes. The router's
    `ChangeConsent` decisions (intents with `action = "opt_out"` / `"opt_in"`) are carried out
    here too, so a reply that says the customer is unsubscribed is never a promise alone.
    Follow, unfollow, scan and consent changes go to the event log. `windows` holds each channel's
    declared window rules; a channel without an entry has no window to open.
    """

    def __init__(self, unsubscribe_reply: str, resubscribe_reply: str,
                 windows: Mapping[str, PushWindow] | None = None, reactions: Reactions | None = None):
        self._unsubscribe_reply = unsubscribe_reply
        self._resubscribe_reply = resubscribe_reply
        self._windows = dict(windows or {})
        self._reactions = reactions or NoReactions()

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
        open_window(customer, WindowAction.MESSAGE, turn.now, self._rules(turn))
        word = fold(inbound.text) if inbound.kind is InboundKind.TEXT else ""
        if word in UNSUBSCRIBE_WORDS:
            await self._opt_out(turn)
            turn.replies.append(Reply(self._unsubscribe_reply, intent="unsubscribe", source="consent"))
            return
        if word in SUBSCRIBE_WORDS:
            self._opt_in(turn)
            turn.replies.append(Reply(self._resubscribe_reply, intent="subscribe", source="consent"))
            return
        was_opted_out = customer.marketing_opt_out
        await next(turn)
        # Any later message resubscribes, unless it was itself a wish to stop.
        decision = turn.decision
        if was_opted_out and customer.marketing_opt_out and not (
                isinstance(decision, ChangeConsent) and decision.opt_out):
            self._change(turn, opt_out=False, via="message")

    async def act(self, turn: Turn, decision: Decision) -> bool:
        """Carry out an intent's opt-out or opt-in, with its reply or the default confirmation."""
        if not isinstance(decision, ChangeConsent):
            return False
        if decision.opt_out:
            await self._opt_out(turn)
        else:
            self._opt_in(turn)
        default = self._unsubscribe_reply if decision.opt_out else self._resubscribe_reply
        turn.replies.extend(decision.replies or [Reply(default, intent=decision.match.intent, source="consent")])
        return True

    async def _opt_out(self, turn: Turn) -> None:
        if turn.customer.marketing_opt_out:
            return
        self._change(turn, opt_out=True, via=turn.inbound.text.strip())
        await self._reactions.on_event(turn.session, turn.customer, OPT_OUT_EVENT,
                                       {"via": turn.inbound.text.strip()}, turn.now)

    def _opt_in(self, turn: Turn) -> None:
        if turn.customer.marketing_opt_out:
            self._change(turn, opt_out=False, via=turn.inbound.text.strip())

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
            open_window(customer, WindowAction.FOLLOW, turn.now, self._rules(turn))
        elif inbound.event is EventKind.CLICK:
            open_window(customer, WindowAction.MENU, turn.now, self._rules(turn))

    def _rules(self, turn: Turn) -> PushWindow | None:
        """The window rules of the customer's channel, when the action happened there: a linked
        group member writing in a group opens no Official Account window (WeChat counts only
        what the customer does in the account itself)."""
        if turn.inbound.channel != turn.customer.channel:
            return None
        return self._windows.get(turn.customer.channel)

    def _change(self, turn: Turn, *, opt_out: bool, via: str) -> None:
        turn.customer.marketing_opt_out = opt_out
        turn.customer.consent_changed_at = turn.now
        log_event(turn.session, turn.customer.id, "marketing_unsubscribed" if opt_out else "marketing_subscribed",
                  turn.now, {"via": via, "channel": turn.inbound.channel})


def _note_arrival(turn: Turn, customer: Customer, inbound: Inbound) -> None:
    customer.last_inbound_at = inbound.received_at
    if inbound.unionid and not customer.unionid:
        customer.unionid = inbound.unionid
