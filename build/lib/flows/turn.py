"""One inbound's trip through the pipeline, and the middlewares that may act on it.

A middleware is `async def __call__(turn, next)`: it sees the customer's locked state inside the
turn's transaction, may act before and after `next(turn)`, and handles the turn itself by not
calling `next` (staff hold the chat, a flow took the answer to its question …). The innermost
step routes: the router's decision is offered to the middlewares that act on decisions
(`DecisionActor`), in order, and the first that acts on it takes it; otherwise its replies go out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession

from handlers.matching import Match
from handlers.messages import Inbound, Reply
from handlers.router import Decision, NotUnderstood
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
    # The router's decision; None when a middleware handled the turn before routing.
    decision: Decision | None = None
    # Work to do once the transaction has committed (wake the console, …).
    after_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def match(self) -> Match | None:
        return self.decision.match if self.decision is not None else None

    @property
    def understood(self) -> bool:
        return not isinstance(self.decision, NotUnderstood)


Next = Callable[[Turn], Awaitable[None]]


class Middleware(Protocol):
    async def __call__(self, turn: Turn, next: Next) -> None: ...


@runtime_checkable
class DecisionActor(Protocol):
    """A middleware that carries out some of the router's decisions (start a flow, hand off)."""

    async def act(self, turn: Turn, decision: Decision) -> bool:
        """Carry the decision out (its replies included) and return True, or leave it: False."""
        ...
