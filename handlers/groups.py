"""Group events in neutral form, and who in a group is talking to the bot.

Every group channel (a gateway, the simulator's group room) turns its input into a `GroupEvent`.
In a group the bot answers only a message that addresses it: an @-mention, or a configured
keyword. Its name is taken out of the text before the text is understood.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from handlers.messages import Reply
from handlers.text import fold


class GroupEventKind(StrEnum):
    MESSAGE = "message"
    JOIN = "join"
    LEAVE = "leave"


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str | None = None
    unionid: str | None = None


@dataclass(frozen=True, slots=True)
class GroupRef:
    id: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class GroupEvent:
    """One thing that happened in a group. `id` is unique per event; a retry carries the same one.

    A message has its `sender`, `text` and `mentioned` (None: the platform did not say); a join or
    leave has its `members`.
    """

    id: str
    kind: GroupEventKind
    group: GroupRef
    sent_at: datetime
    sender: Member | None = None
    text: str = ""
    mentioned: bool | None = None
    members: tuple[Member, ...] = ()


class AddressedBy(StrEnum):
    MENTION = "mention"
    KEYWORD = "keyword"


@dataclass(frozen=True, slots=True)
class Addressed:
    """A message to the bot: how it was addressed, and its words without the bot's name."""

    by: AddressedBy
    text: str
    keyword: str | None = None  # the keyword that matched (a later command such as 签到 keys on it)


# WeChat separates a mention from what follows with U+2005; people type spaces of any width.
_GAP = r"[\s\u2005\u00a0\u3000]*"


class Addressing:
    """Decides whether a group message is for the bot (see the module's docstring)."""

    def __init__(self, bot_names: Sequence[str], keywords: Sequence[str]):
        names = sorted({name for name in bot_names if name}, key=len, reverse=True)  # longest first
        alternatives = "|".join(re.escape(name) for name in names)
        self._mention = re.compile(f"[@＠](?:{alternatives}){_GAP}") if names else None
        self._leading = re.compile(f"^{_GAP}[@＠](?:{alternatives})") if names else None
        self._keywords = [(keyword, fold(keyword)) for keyword in keywords if fold(keyword)]

    def strip(self, text: str) -> str:
        """The text without any "@<bot name>"."""
        return self._mention.sub(" ", text).strip() if self._mention else text.strip()

    def mentions(self, text: str) -> bool:
        """Whether the text begins with "@<bot name>" (for gateways that do not say)."""
        return self._leading is not None and self._leading.search(text) is not None

    def address(self, text: str, mentioned: bool | None) -> Addressed | None:
        """How the message addresses the bot, or None: the bot stays silent."""
        mention = mentioned if mentioned is not None else self.mentions(text)
        words = self.strip(text)
        if mention:
            return Addressed(AddressedBy.MENTION, words)
        folded = fold(words)
        for keyword, folded_keyword in self._keywords:
            if folded_keyword in folded:
                return Addressed(AddressedBy.KEYWORD, words, keyword)
        return None


# Answers about the customer's consent are theirs alone, whichever rule or intent gave them.
CONSENT_INTENTS = frozenset({"unsubscribe", "subscribe"})


class PersonalAnswers:
    """Which answers carry the customer's own data and so go privately from a group: those of
    the intents and flows (`flow:<name>`) marked personal, and consent confirmations."""

    def __init__(self, intents: Iterable[str], flows: Iterable[str]):
        self._intents = frozenset(intents) | CONSENT_INTENTS | {f"flow:{name}" for name in flows}

    def __contains__(self, intent: object) -> bool:
        return intent in self._intents

    def any_in(self, replies: Iterable[Reply]) -> bool:
        return any(reply.intent in self._intents for reply in replies)
