"""What handles customers' messages, built in one place for `siyu serve`, `siyu chat`, `siyu import`
and the tests: the router, the flow engine, the middlewares and the pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app.channels import push_windows
from bot.app.understanding import build_router
from bot.clock import Clock
from bot.config.settings import Settings
from bot.console.takeover import HandoffMiddleware
from bot.pipeline.pipeline import Pipeline
from flows.consent import ConsentMiddleware
from flows.engine import FlowEngine
from flows.lifecycle import LifecycleMiddleware
from flows.push_window import PushWindow
from flows.turn import Middleware
from flows.variables import FlowVariables
from handlers.router import Router


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


@dataclass(frozen=True, slots=True)
class MessageServices:
    router: Router
    flows: FlowEngine
    pipeline: Pipeline


async def start_flow_engine(settings: Settings, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> FlowEngine:
    """The flow engine, with this config's flow versions recorded (runs refer to them)."""
    flows = build_flow_engine(settings, sessions)
    await flows.save_versions(clock.now())
    return flows


async def build_services(settings: Settings, sessions: async_sessionmaker[AsyncSession], clock: Clock,
                         notify: Callable[[], Awaitable[None]] | None = None,
                         windows: Mapping[str, PushWindow] | None = None) -> MessageServices:
    """The router (trained in a worker thread: segmentation and the classifier are seconds of CPU
    work), the flow engine and the pipeline with its middlewares."""
    router = await asyncio.get_running_loop().run_in_executor(None, build_router, settings)
    flows = await start_flow_engine(settings, sessions, clock)
    pipeline = Pipeline(sessions, router, clock, middlewares=build_middlewares(settings, flows, notify, windows))
    return MessageServices(router, flows, pipeline)
