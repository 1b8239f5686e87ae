"""How WeCom Customer Service (微信客服) joins the app: its routes, its sender, its callback and puller."""

from __future__ import annotations

from aiohttp import web

from bot.app import keys
from bot.channels.base import Sender
from bot.channels.wecom.api import WecomApi
from bot.channels.wecom_kf.api import KfApi
from bot.channels.wecom_kf.callback import WecomKfCallback
from bot.channels.wecom_kf.events import KfEvents
from bot.channels.wecom_kf.parse import CHANNEL
from bot.channels.wecom_kf.puller import KfPuller
from bot.channels.wecom_kf.sender import PUSH_WINDOW, WecomKfSender
from bot.config.settings import Settings
from bot.outbox.outbox import Outbox
from bot.pipeline.pipeline import Pipeline

WECOM_KF_CALLBACK = web.AppKey("wecom_kf_callback", WecomKfCallback)
WECOM_KF_API = web.AppKey("wecom_kf_api", KfApi)


class WecomKfWiring:
    name = CHANNEL
    push_window = PUSH_WINDOW

    def add_routes(self, app: web.Application, settings: Settings) -> None:
        kf = settings.channels.wecom_kf
        if kf.enabled:
            app.router.add_get(kf.path, _verify)
            app.router.add_post(kf.path, _receive)

    def sender(self, app: web.Application, settings: Settings) -> Sender | None:
        kf = settings.channels.wecom_kf
        if not kf.enabled:
            return None
        api = KfApi(WecomApi(app[keys.HTTP], app[keys.SESSIONS], app[keys.CLOCK], base_url=kf.api_base_url,
                             corp_id=kf.corp_id, secret=kf.secret,
                             refresh_margin_seconds=kf.token_refresh_margin_seconds))
        app[WECOM_KF_API] = api
        return WecomKfSender(api, app[keys.SESSIONS])

    def start(self, app: web.Application, settings: Settings, pipeline: Pipeline, outbox: Outbox) -> None:
        kf = settings.channels.wecom_kf
        if not kf.enabled:
            return
        api, sessions, clock = app[WECOM_KF_API], app[keys.SESSIONS], app[keys.CLOCK]
        events = KfEvents(api, sessions, clock, kf.welcome)
        puller = KfPuller(api, sessions, pipeline, outbox, events, clock, limit=kf.sync_limit,
                          lease_seconds=kf.pull_lease_seconds)
        app[WECOM_KF_CALLBACK] = WecomKfCallback(kf, puller, app[keys.TASKS], app[keys.METRICS])


WIRING = WecomKfWiring()


async def _verify(request: web.Request) -> web.StreamResponse:
    return await request.app[WECOM_KF_CALLBACK].verify_url(request)


async def _receive(request: web.Request) -> web.StreamResponse:
    return await request.app[WECOM_KF_CALLBACK].receive(request)
