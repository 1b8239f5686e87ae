"""One inbound's trip through the pipeline, and the stages that may act on it.

Stages (staff takeover, flows, consent …) plug into the pipeline without changing it: each sees
the customer's locked state inside the pipeline's transaction, before and after routing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from handlers.matching import Match
from handlers.messages import Inbound, Reply
from storage.conversations import NewMessage
from storage.models import Conversation, Customer


@dataclass(slots=True)
class Turn:
    session: AsyncSession
    inbound: Inbound
    customer: Customer
    conversation: Conversation
    message: NewMessage  # the inbound message, stored with the turn's replies
    now: datetime
    variables: dict[str, str]
    replies: list[Reply] = field(default_factory=list)
    match: Match | None = None
    understood: bool = True
    # Set by a stage that has dealt with the message: routing is skipped (staff hold the chat,
    # a flow consumed the answer to its question …).
    handled: bool = False
    # Work to do once the transaction has committed (wake the console, …).
    after_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class Stage(Protocol):
    async def before_route(self, turn: Turn) -> None: ...

    async def after_route(self, turn: Turn) -> None: ...
