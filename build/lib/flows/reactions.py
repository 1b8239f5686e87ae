"""How the lifecycle and business events tell the flow engine what happened.

Kept as a protocol so the lifecycle and events code never import the flow engine, and tests
can watch the calls.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Customer


class Reactions(Protocol):
    async def on_event(self, session: AsyncSession, customer: Customer, event_type: str,
                       data: dict[str, Any], now: datetime) -> None:
        """A business event (order_paid, cart_abandoned …) was applied to the customer."""

    async def on_stage_change(self, session: AsyncSession, customer: Customer, from_stage: str | None,
                              to_stage: str, now: datetime) -> None:
        """The customer moved to another lifecycle stage."""


class NoReactions:
    async def on_event(self, session: AsyncSession, customer: Customer, event_type: str,
                       data: dict[str, Any], now: datetime) -> None:
        return None

    async def on_stage_change(self, session: AsyncSession, customer: Customer, from_stage: str | None,
                              to_stage: str, now: datetime) -> None:
        return None
