"""The aiohttp application, wired in one place: settings, storage, channels, sweepers."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.api.events import EVENT_REACTIONS, add_event_routes
from bot.app import keys
from bot.app.background import BackgroundTasks
from bot.app.channels import CHANNELS
from bot.app.http_body import MAX_BODY_BYTES
from bot.app.http_headers import set_response_headers
from bot.app.metrics import Metrics, watch_loop_lag
from bot.app.services import build_services
from bot.app.sweepers import SweeperWork, running_sweepers
from bot.channels.base import Sender
from bot.channels.wechat_mp.wiring import WECHAT_MP_API
from bot.clock import Clock, SystemClock
from bot.config.settings import Settings
from bot.console.routes import CONSOLE_HUB, add_console_routes
from bot.groups.services import build_group_services
from bot.outbox.outbox import Outbox
from flows.engine import FlowEngine
from storage.db import database_reachable, make_engine, make_sessionmaker

log = logging.getLogger(__name__)

SENDERS = web.AppKey("senders", Mapping[str, Sender])
FLOWS = web.AppKey("flows", FlowEngine)


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock or SystemClock()
    app[keys.METRICS] = Metrics()
    app[keys.TASKS] = BackgroundTasks()
    app.on_response_prepare.append(set_response_headers)
    app.cleanup_ctx.extend([_storage, _http_client, _message_path, _sweepers, _start_up_heap_frozen,
                           _loop_lag_probe])

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_event_routes(app)
    for channel in CHANNELS:
        channel.add_routes(app, settings)
    if settings.staff.enabled:
        add_console_routes(app, settings.staff)
    return app


async def _storage(app: web.Application) -> AsyncIterator[None]:
    storage = app[keys.SETTINGS].storage
    engine = make_engine(storage.url, pool_size=storage.pool_size, echo=storage.echo)
    app[keys.ENGINE] = engine
    app[keys.SESSIONS] = make_sessionmaker(engine)
    yield
    await engine.dispose()


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[keys.HTTP] = session
        yield


async def _message_path(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    notify = app[CONSOLE_HUB].notify if CONSOLE_HUB in app else None
    services = await build_services(settings, app[keys.SESSIONS], app[keys.CLOCK], notify)
    flows, pipeline = services.flows, services.pipeline
    app[FLOWS] = flows
    if EVENT_REACTIONS not in app:  # tests may watch the reactions instead
        app[EVENT_REACTIONS] = flows  # business events start and end flows
    senders: dict[str, Sender] = {}
    for channel in CHANNELS:
        sender = channel.sender(app, settings)
        if sender is not None:
            senders[channel.name] = sender
    outbox = Outbox(app[keys.SESSIONS], senders, app[keys.CLOCK])
    app[SENDERS] = senders
    app[keys.PIPELINE] = pipeline
    app[keys.OUTBOX] = outbox
    groups = build_group_services(settings, app[keys.SESSIONS], app[keys.CLOCK], flows, app[keys.TASKS],
                                  app[keys.METRICS])
    app[keys.GROUPS] = groups
    for channel in CHANNELS:
        channel.start(app, settings, pipeline, outbox)
    yield
    groups.posts.close()
    await app[keys.TASKS].drain()
    await groups.close()
    await pipeline.close()


async def _sweepers(app: web.Application) -> AsyncIterator[None]:
    """Periodic sweepers (bot/app/sweepers.py), stopped gracefully while storage is still open."""
    mp_api = app[WECHAT_MP_API] if WECHAT_MP_API in app else None
    notify = app[CONSOLE_HUB].notify if CONSOLE_HUB in app else None
    work = SweeperWork(settings=app[keys.SETTINGS], sessions=app[keys.SESSIONS], clock=app[keys.CLOCK],
                       outbox=app[keys.OUTBOX], senders=app[SENDERS], flows=app[FLOWS], wechat_mp=mp_api,
                       notify=notify, group_posts=app[keys.GROUPS].posts)
    async with running_sweepers(work):
        yield


async def _start_up_heap_frozen(app: web.Application) -> AsyncIterator[None]:
    """What start-up built (the segmenter's dictionary, the classifier, settings, modules) lives as
    long as the process: keep it out of the garbage collector's full passes, which otherwise walk
    it every thousand or so messages and stall the event loop for a few hundred milliseconds."""
    gc.freeze()
    yield
    gc.unfreeze()


async def _loop_lag_probe(app: web.Application) -> AsyncIterator[None]:
    """siyu_event_loop_lag_seconds: how long work on the event loop keeps messages waiting."""
    probe = asyncio.create_task(watch_loop_lag(app[keys.METRICS].loop_lag.observe), name="event loop lag probe")
    yield
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers and the latest message could be stored; else 503, saying which."""
    reachable = await database_reachable(request.app[keys.ENGINE])
    saves = request.app[keys.PIPELINE].saves
    ok = reachable and not saves.failing
    body: dict[str, object] = {"status": "ok" if ok else "degraded", "database": reachable,
                               "writes": not saves.failing}
    if saves.failing:
        body["write_error"] = saves.last_error
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[keys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
