"""How the simulator joins the app: the web chat's routes (each behind `access.refusal`), and a
sender that keeps pushes stored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.app import keys
from bot.channels.base import Sender
from bot.channels.simulator.access import refusal
from bot.channels.simulator.channel import CHANNEL, SimulatorChannel, SimulatorSender
from bot.channels.simulator.group_room import SimulatorGroupPoster, SimulatorGroupRoom
from bot.config.settings import Settings
from bot.outbox.outbox import Outbox
from bot.pipeline.pipeline import Pipeline

SIMULATOR = web.AppKey("simulator", SimulatorChannel)
SIMULATOR_GROUPS = web.AppKey("simulator_groups", SimulatorGroupRoom)


class SimulatorWiring:
    name = CHANNEL
    push_window = None
    simulated = True  # its users are whatever anyone types: business events never name them

    def add_routes(self, app: web.Application, settings: Settings) -> None:
        sim = settings.channels.simulator
        if sim.enabled:
            base = sim.path.rstrip("/")
            app.router.add_get(base + "/", _guarded(_page))
            app.router.add_get(base + "/simulator.js", _guarded(_script))
            app.router.add_get(base, _redirect)
            app.router.add_post(base + "/api/messages", _guarded(_post))
            app.router.add_get(base + "/api/messages", _guarded(_messages))
            app.router.add_get(base + "/group", _guarded(_group_page))
            app.router.add_get(base + "/simulator-group.js", _guarded(_group_script))
            app.router.add_post(base + "/api/group", _guarded(_group_post))
            app.router.add_get(base + "/api/group", _guarded(_group_entries))

    def sender(self, app: web.Application, settings: Settings) -> Sender | None:
        # Always: simulated customers (`siyu chat`, the web chat) get staff replies and touches.
        return SimulatorSender()

    def start(self, app: web.Application, settings: Settings, pipeline: Pipeline, outbox: Outbox) -> None:
        if settings.channels.simulator.enabled:
            app[SIMULATOR] = SimulatorChannel(pipeline, app[keys.METRICS], app[keys.SESSIONS], app[keys.CLOCK])
            groups = app[keys.GROUPS]
            groups.posts.add_poster(CHANNEL, SimulatorGroupPoster())
            app[SIMULATOR_GROUPS] = SimulatorGroupRoom(groups.room(CHANNEL, pipeline, outbox), app[keys.SESSIONS],
                                                       app[keys.CLOCK])


WIRING = SimulatorWiring()


Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guarded(route: Route) -> Route:
    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = await refusal(request)
        return refused if refused is not None else await route(request)

    return guarded


async def _page(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].page(request)


async def _script(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].script(request)


async def _post(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].post_message(request)


async def _messages(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].messages(request)


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.path + "/")


async def _group_page(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].page(request, "simulator-group.html")


async def _group_script(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].script(request, "simulator-group.js")


async def _group_post(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR_GROUPS].post_event(request)


async def _group_entries(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR_GROUPS].entries(request)
