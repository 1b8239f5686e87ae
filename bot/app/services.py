"""The stages every channel's messages pass through, built the same way for the service and `siyu chat`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app.channels import push_windows
from bot.config.settings import Settings
from bot.console.stage import HandoffStage
from flows.consent import ConsentAndWindowStage
from flows.engine import FlowEngine
from flows.lifecycle import LifecycleStage
from flows.push_window import PushWindow
from flows.turn import Stage
from flows.variables import FlowVariables


def build_flow_engine(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> FlowEngine:
    return FlowEngine(settings.flows, sessions, settings.points,
                      FlowVariables(expiring_soon_days=settings.points.expiring_soon_days))


def build_stages(settings: Settings, flows: FlowEngine, notify: Callable[[], Awaitable[None]] | None = None,
                 windows: Mapping[str, PushWindow] | None = None) -> list[Stage]:
    """In order: consent and the push window first (they hold even while staff have the chat),
    then staff takeover (which silences the bot), then flows (answers to their questions), then
    the lifecycle, which counts what the customer did once routing has named it. `windows`:
    each channel's push window rules, by default those the channels declare."""
    return [
        ConsentAndWindowStage(settings.touches.unsubscribe_reply, settings.touches.resubscribe_reply,
                              push_windows() if windows is None else windows),
        HandoffStage(settings.staff, notify),
        flows,
        LifecycleStage(settings.lifecycle, flows),
    ]
