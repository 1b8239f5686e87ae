"""Decide what to say to one inbound: events, media and text through the matchers in order.

The router returns a typed decision; the pipeline's innermost step acts on it in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
class Answer:
    """Reply with these (possibly none)."""

    replies: list[Reply] = field(default_factory=list)
    match: Match | None = None


@dataclass(frozen=True, slots=True)
class StartFlow:
    """Start the named flow; `replies` (the match's own reply, if any) go first."""

    flow: str
    match: Match
    replies: list[Reply] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HandOff:
    """Hand the conversation to staff; `replies` (the match's own reply, if any) go first."""

    match: Match
    replies: list[Reply] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NotUnderstood:
    """The customer's words were not understood; `replies` is the fallback."""

    replies: list[Reply] = field(default_factory=list)
    match: None = None


Decision = Answer | StartFlow | HandOff | NotUnderstood


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

    def route(self, inbound: Inbound, variables: Mapping[str, str]) -> Decision:
        if inbound.kind is InboundKind.EVENT:
            return self._route_event(inbound, variables)
        if inbound.kind in (InboundKind.TEXT, InboundKind.VOICE) and inbound.text.strip():
            return self.route_text(inbound.text, variables)
        if inbound.kind is InboundKind.UNKNOWN:
            return Answer()
        return Answer([Reply(render(self._texts.media, variables), intent="media")])

    def route_text(self, text: str, variables: Mapping[str, str]) -> Decision:
        for matcher in self._matchers:
            found = matcher.match(text)
            if found is not None:
                replies = []
                if found.reply:
                    replies.append(Reply(render(found.reply, variables), intent=found.intent, source=found.source))
                elif found.action is Action.REPLY:
                    continue
                if found.action is Action.FLOW and found.flow:
                    return StartFlow(found.flow, found, replies)
                if found.action is Action.HANDOFF:
                    return HandOff(found, replies)
                return Answer(replies, found)
        return NotUnderstood([Reply(render(self._texts.fallback, variables), intent=FALLBACK_INTENT,
                                    source="fallback")])

    def _route_event(self, inbound: Inbound, variables: Mapping[str, str]) -> Decision:
        if inbound.event is EventKind.SUBSCRIBE:
            source = inbound.event_key or ""
            welcome = self._texts.welcome_by_source.get(source, self._texts.welcome)
            return Answer([Reply(render(welcome, variables), intent="welcome")])
        if inbound.event is EventKind.CLICK and inbound.event_key:
            # A menu key is routed like words, so operators answer menus with ordinary rules.
            decision = self.route_text(inbound.event_key, variables)
            return Answer() if isinstance(decision, NotUnderstood) else decision
        return Answer()
