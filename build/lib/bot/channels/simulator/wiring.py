"""How the simulator joins the app: the web chat's routes, and a sender that keeps pushes stored."""

from __future__ import annotations

from aiohttp import web

from bot.app import keys
from bot.channels.base import Sender
from bot.channels.simulator.channel import CHANNEL, SimulatorChannel, SimulatorSender
from bot.config.settings import Settings
from bot.outbox.outbox import Outbox
from bot.pipeline.pipeline import Pipeline

SIMULATOR = web.AppKey("simulator", SimulatorChannel)


class SimulatorWiring:
    name = CHANNEL
    push_window = None

    def add_routes(self, app: web.Application, settings: Settings) -> None:
        sim = settings.channels.simulator
        if sim.enabled:
            base = sim.path.rstrip("/")
            app.router.add_get(base + "/", _page)
            app.router.add_get(base, _redirect)
            app.router.add_post(base + "/api/messages", _post)
            app.router.add_get(base + "/api/messages", _messages)

    def sender(self, app: web.Application, settings: Settings) -> Sender | None:
        # Always: simulated customers (`siyu chat`, the web chat) get staff replies and touches.
        return SimulatorSender()

    def start(self, app: web.Application, settings: Settings, pipeline: Pipeline, outbox: Outbox) -> None:
        if settings.channels.simulator.enabled:
            app[SIMULATOR] = SimulatorChannel(pipeline, app[keys.METRICS], app[keys.SESSIONS], app[keys.CLOCK])


WIRING = SimulatorWiring()


async def _page(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].page(request)


async def _post(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].post_message(request)


async def _messages(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].messages(request)


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.path + "/")
