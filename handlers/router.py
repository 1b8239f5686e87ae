"""Decide what to say to one inbound: events, media and text through the matchers in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from handlers.matching import Action, Match, Matcher
from handlers.messages import EventKind, Inbound, InboundKind, Reply

FALLBACK_INTENT = "fallback"


@dataclass(frozen=True, slots=True)
class ReplyTexts:
    fallback: str
    welcome: str
    media: str
    welcome_by_source: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Routed:
    replies: list[Reply]
    match: Match | None
    # False when a customer's words were not understood (the pipeline counts these).
    understood: bool = True


class _Variables(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(template: str, variables: Mapping[str, str]) -> str:
    """Fill `{nickname}`-style variables; unknown ones stay visible rather than crash a reply."""
    return template.format_map(_Variables(variables))


class Router:
    def __init__(self, matchers: Sequence[Matcher], texts: ReplyTexts):
        self._matchers = list(matchers)
        self._texts = texts

    def route(self, inbound: Inbound, variables: Mapping[str, str]) -> Routed:
        if inbound.kind is InboundKind.EVENT:
            return self._route_event(inbound, variables)
        if inbound.kind in (InboundKind.TEXT, InboundKind.VOICE) and inbound.text.strip():
            return self.route_text(inbound.text, variables)
        if inbound.kind is InboundKind.UNKNOWN:
            return Routed(replies=[], match=None)
        return Routed(replies=[Reply(render(self._texts.media, variables), intent="media")], match=None)

    def route_text(self, text: str, variables: Mapping[str, str]) -> Routed:
        for matcher in self._matchers:
            found = matcher.match(text)
            if found is not None:
                replies = []
                if found.reply:
                    replies.append(Reply(render(found.reply, variables), intent=found.intent, source=found.source))
                elif found.action is Action.REPLY:
                    continue
                return Routed(replies=replies, match=found)
        return Routed(
            replies=[Reply(render(self._texts.fallback, variables), intent=FALLBACK_INTENT, source="fallback")],
            match=None,
            understood=False,
        )

    def _route_event(self, inbound: Inbound, variables: Mapping[str, str]) -> Routed:
        if inbound.event is EventKind.SUBSCRIBE:
            source = inbound.event_key or ""
            welcome = self._texts.welcome_by_source.get(source, self._texts.welcome)
            return Routed(replies=[Reply(render(welcome, variables), intent="welcome")], match=None)
        if inbound.event is EventKind.CLICK and inbound.event_key:
            # A menu key is routed like words, so operators answer menus with ordinary rules.
            routed = self.route_text(inbound.event_key, variables)
            return routed if routed.understood else Routed(replies=[], match=None)
        return Routed(replies=[], match=None)
