"""The aiohttp application, wired in one place: settings, storage, channels, scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot import keys
from bot.background import BackgroundTasks
from bot.channels.simulator import CHANNEL as SIMULATOR_CHANNEL, SimulatorChannel, SimulatorSender
from bot.channels.wechat_api import WechatApi
from bot.channels.wechat_mp import CHANNEL as WECHAT_MP, WechatMpCallback, WechatMpSender
from bot.clock import Clock, SystemClock
from bot.console.routes import CONSOLE_HUB, add_console_routes
from bot.console.stage import HandoffStage
from bot.console.sweeper import sweep_unclaimed
from bot.config import Settings
from bot.events_api import add_event_routes
from bot.metrics import Metrics
from bot.outbox import Outbox, Sender
from bot.pipeline import Pipeline
from bot.touch_dispatch import default_worker_id, dispatch_due_touches
from bot.touch_policy import ConsentAndWindowStage
from bot.understanding import build_router
from storage.db import database_reachable, make_engine, make_sessionmaker

log = logging.getLogger(__name__)

WECHAT_MP_CALLBACK = web.AppKey("wechat_mp_callback", WechatMpCallback)
WECHAT_MP_API = web.AppKey("wechat_mp_api", WechatApi)
SIMULATOR = web.AppKey("simulator", SimulatorChannel)
SENDERS = web.AppKey("senders", dict)


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock or SystemClock()
    app[keys.METRICS] = Metrics()
    app[keys.TASKS] = BackgroundTasks()
    app.cleanup_ctx.extend([_storage, _http_client, _message_path, _scheduler])

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_event_routes(app)
    mp = settings.channels.wechat_mp
    if mp.enabled:
        app.router.add_get(mp.path, _wechat_mp_verify)
        app.router.add_post(mp.path, _wechat_mp_receive)
    sim = settings.channels.simulator
    if sim.enabled:
        base = sim.path.rstrip("/")
        app.router.add_get(base + "/", _simulator_page)
        app.router.add_get(base, _simulator_redirect)
        app.router.add_post(base + "/api/messages", _simulator_post)
        app.router.add_get(base + "/api/messages", _simulator_messages)
    if settings.staff.enabled:
        add_console_routes(app, settings.staff)
    return app


# Routes are fixed before start-up; the objects behind them are built in start-up.
async def _wechat_mp_verify(request: web.Request) -> web.StreamResponse:
    return await request.app[WECHAT_MP_CALLBACK].verify_url(request)


async def _wechat_mp_receive(request: web.Request) -> web.StreamResponse:
    return await request.app[WECHAT_MP_CALLBACK].receive(request)


async def _simulator_page(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].page(request)


async def _simulator_post(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].post_message(request)


async def _simulator_messages(request: web.Request) -> web.StreamResponse:
    return await request.app[SIMULATOR].messages(request)


async def _simulator_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.path + "/")


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
    pipeline = Pipeline(app[keys.SESSIONS], router, app[keys.CLOCK],
                        stages=[ConsentAndWindowStage(settings.touches), HandoffStage(settings.staff, notify)])
    senders: dict[str, Sender] = {SIMULATOR_CHANNEL: SimulatorSender()}
    mp = settings.channels.wechat_mp
    if mp.enabled:
        api = WechatApi(app[keys.HTTP], app[keys.SESSIONS], app[keys.CLOCK], base_url=mp.api_base_url,
                        app_id=mp.app_id, app_secret=mp.app_secret,
                        refresh_margin_seconds=mp.token_refresh_margin_seconds)
        app[WECHAT_MP_API] = api
        senders[WECHAT_MP] = WechatMpSender(api)
    outbox = Outbox(app[keys.SESSIONS], senders)
    app[SENDERS] = senders
    app[keys.PIPELINE] = pipeline
    app[keys.OUTBOX] = outbox
    if mp.enabled:
        app[WECHAT_MP_CALLBACK] = WechatMpCallback(mp, pipeline, outbox, app[keys.TASKS], app[keys.METRICS])
    if settings.channels.simulator.enabled:
        app[SIMULATOR] = SimulatorChannel(pipeline, app[keys.METRICS], app[keys.SESSIONS])
    yield
    await app[keys.TASKS].drain()


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    scheduler = AsyncIOScheduler(timezone="UTC")
    if WECHAT_MP_API in app:
        # Refresh the shared access token ahead of expiry so no message waits for it.
        scheduler.add_job(_refresh_token, "interval", seconds=60, args=[app[WECHAT_MP_API]],
                          id="wechat_mp_token", max_instances=1, coalesce=True)
    if app[keys.SETTINGS].staff.enabled:
        # Chats queued longer than [staff] wait_minutes get one wait message.
        scheduler.add_job(_sweep_unclaimed, "interval", seconds=30, args=[app], id="staff_wait_message",
                          max_instances=1, coalesce=True)
    # Due touches are rows claimed under a lease, so every process can run this job.
    scheduler.add_job(_dispatch_touches, "interval", seconds=app[keys.SETTINGS].touches.dispatch_interval_seconds,
                      args=[app, default_worker_id()], id="touch_dispatch", max_instances=1, coalesce=True)
    app[keys.SCHEDULER] = scheduler
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)


async def _dispatch_touches(app: web.Application, worker_id: str) -> None:
    try:
        await dispatch_due_touches(app[keys.SESSIONS], app[SENDERS], app[keys.SETTINGS].touches,
                                   app[keys.CLOCK], worker_id)
    except Exception:  # noqa: BLE001 - the next run retries; leases release what this one held
        log.exception("touch dispatch failed")


async def _refresh_token(api: WechatApi) -> None:
    try:
        await api.access_token()
    except Exception:  # noqa: BLE001 - next run retries; messages refresh on demand too
        log.exception("access token refresh failed")


async def _sweep_unclaimed(app: web.Application) -> None:
    try:
        await sweep_unclaimed(app[keys.SESSIONS], app[keys.OUTBOX], app[keys.SETTINGS].staff, app[keys.CLOCK].now(),
                              app[CONSOLE_HUB].notify if CONSOLE_HUB in app else None)
    except Exception:  # noqa: BLE001 - the next run retries
        log.exception("staff wait-message sweep failed")


async def healthz(request: web.Request) -> web.Response:
    ok = await database_reachable(request.app[keys.ENGINE])
    return web.json_response({"status": "ok" if ok else "degraded", "database": ok}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[keys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
