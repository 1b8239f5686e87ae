"""The aiohttp application, wired in one place: settings, storage, channels, scheduler."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.api.events import EVENT_REACTIONS, add_event_routes
from bot.app import keys
from bot.app.background import BackgroundTasks
from bot.app.channels import CHANNELS
from bot.app.http_body import MAX_BODY_BYTES
from bot.app.metrics import Metrics, watch_loop_lag
from bot.app.services import build_flow_engine, build_middlewares
from bot.app.understanding import build_router
from bot.channels.base import Sender
from bot.channels.wechat_mp.wiring import WECHAT_MP_API
from bot.clock import Clock, SystemClock
from bot.config.settings import Settings
from bot.console.routes import CONSOLE_HUB, add_console_routes
from bot.console.sweeper import sweep_unclaimed
from bot.outbox.dispatch import dispatch_due_touches
from bot.outbox.outbox import Outbox
from bot.pipeline.pipeline import Pipeline
from flows.engine import FlowEngine
from flows.lifecycle import lifecycle_sweep
from flows.points import expire_points
from storage.db import database_reachable, make_engine, make_sessionmaker
from storage.workers import worker_id

log = logging.getLogger(__name__)

SENDERS = web.AppKey("senders", Mapping[str, Sender])
FLOWS = web.AppKey("flows", FlowEngine)
WORKER_ID = worker_id()


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock or SystemClock()
    app[keys.METRICS] = Metrics()
    app[keys.TASKS] = BackgroundTasks()
    app.cleanup_ctx.extend([_storage, _http_client, _message_path, _scheduler, _start_up_heap_frozen,
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
    # Building the matchers is CPU work (segmentation, classifier): keep it off the event loop.
    router = await asyncio.get_running_loop().run_in_executor(None, build_router, settings)
    notify = app[CONSOLE_HUB].notify if CONSOLE_HUB in app else None
    flows = build_flow_engine(settings, app[keys.SESSIONS])
    await flows.save_versions(app[keys.CLOCK].now())
    app[FLOWS] = flows
    if EVENT_REACTIONS not in app:  # tests may watch the reactions instead
        app[EVENT_REACTIONS] = flows  # business events start and end flows
    pipeline = Pipeline(app[keys.SESSIONS], router, app[keys.CLOCK],
                        middlewares=build_middlewares(settings, flows, notify))
    senders: dict[str, Sender] = {}
    for channel in CHANNELS:
        sender = channel.sender(app, settings)
        if sender is not None:
            senders[channel.name] = sender
    outbox = Outbox(app[keys.SESSIONS], senders, app[keys.CLOCK])
    app[SENDERS] = senders
    app[keys.PIPELINE] = pipeline
    app[keys.OUTBOX] = outbox
    for channel in CHANNELS:
        channel.start(app, settings, pipeline, outbox)
    yield
    await app[keys.TASKS].drain()
    await pipeline.close()


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    """Periodic sweepers. Each claims its work in the database, so every process may run them."""
    settings = app[keys.SETTINGS]
    scheduler = AsyncIOScheduler(timezone="UTC")

    def every(seconds: float, job: Callable[[web.Application], Awaitable[object]]) -> None:
        scheduler.add_job(_logged, "interval", seconds=seconds, args=[job, app], id=job.__name__,
                          name=job.__name__.lstrip("_"), max_instances=1, coalesce=True)

    if WECHAT_MP_API in app:
        every(60, _refresh_token)  # ahead of expiry, so no message waits for a token
    if settings.staff.enabled:
        every(30, _sweep_unclaimed)  # chats queued past [staff] wait_minutes get one wait message
    every(settings.touches.dispatch_interval_seconds, _dispatch_touches)
    every(FLOW_SWEEP_SECONDS, _advance_flows)
    every(LIFECYCLE_SWEEP_SECONDS, _sweep_lifecycle)
    every(POINTS_EXPIRY_SECONDS, _expire_points)
    app[keys.SCHEDULER] = scheduler
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)


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


FLOW_SWEEP_SECONDS = 30
LIFECYCLE_SWEEP_SECONDS = 600
POINTS_EXPIRY_SECONDS = 3600


async def _logged(job: Callable[[web.Application], Awaitable[object]], app: web.Application) -> None:
    try:
        await job(app)
    except Exception:
        log.exception("%s failed", job.__name__)


async def _dispatch_touches(app: web.Application) -> None:
    await dispatch_due_touches(app[keys.SESSIONS], app[SENDERS], app[keys.SETTINGS].touches,
                               app[keys.CLOCK], WORKER_ID)


async def _refresh_token(app: web.Application) -> None:
    await app[WECHAT_MP_API].access_token()


async def _sweep_unclaimed(app: web.Application) -> None:
    await sweep_unclaimed(app[keys.SESSIONS], app[keys.OUTBOX], app[keys.SETTINGS].staff, app[keys.CLOCK].now(),
                          app[CONSOLE_HUB].notify if CONSOLE_HUB in app else None)


async def _advance_flows(app: web.Application) -> None:
    now = app[keys.CLOCK].now()
    await app[FLOWS].run_schedules(now)
    await app[FLOWS].advance_due(now)


async def _sweep_lifecycle(app: web.Application) -> None:
    moved = await lifecycle_sweep(app[keys.SESSIONS], app[keys.SETTINGS].lifecycle, app[keys.CLOCK].now(),
                                  app[FLOWS])
    log.info("lifecycle sweep: %s", moved)


async def _expire_points(app: web.Application) -> None:
    await expire_points(app[keys.SESSIONS], app[keys.CLOCK].now())


async def healthz(request: web.Request) -> web.Response:
    ok = await database_reachable(request.app[keys.ENGINE])
    return web.json_response({"status": "ok" if ok else "degraded", "database": ok}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[keys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
