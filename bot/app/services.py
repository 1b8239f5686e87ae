"""The middlewares every channel's messages pass through, built the same way for the service and `siyu chat`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app.channels import push_windows
from bot.config.settings import Settings
from bot.console.takeover import HandoffMiddleware
from flows.consent import ConsentMiddleware
from flows.engine import FlowEngine
from flows.lifecycle import LifecycleMiddleware
from flows.push_window import PushWindow
from flows.turn import Middleware
from flows.variables import FlowVariables


def build_flow_engine(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> FlowEngine:
    return FlowEngine(settings.flows, sessions, settings.points,
                      FlowVariables(expiring_soon_days=settings.points.expiring_soon_days))


def build_middlewares(settings: Settings, flows: FlowEngine, notify: Callable[[], Awaitable[None]] | None = None,
                      windows: Mapping[str, PushWindow] | None = None) -> list[Middleware]:
    """Outermost first: the lifecycle, which counts what the customer did once the turn is done
    (whoever handled it); consent, subscription and the push window (they hold even while staff
    have the chat); staff takeover (which silences the bot); flows (answers to their questions).
    Handoff and flows, in that order, are offered the router's decision first. `windows`: each
    channel's push window rules, by default those the channels declare."""
    return [
        LifecycleMiddleware(settings.lifecycle, flows),
        ConsentMiddleware(settings.touches.unsubscribe_reply, settings.touches.resubscribe_reply,
                          push_windows() if windows is None else windows),
        HandoffMiddleware(settings.staff, notify),
        flows,
    ]
