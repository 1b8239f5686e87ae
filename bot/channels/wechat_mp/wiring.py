"""How the Official Account joins the app: its routes, its sender, its callback."""

from __future__ import annotations

import logging

from aiohttp import web

from bot.app import keys
from bot.channels.base import Sender
from bot.channels.wechat_mp.api import WechatApi
from bot.channels.wechat_mp.callback import WechatMpCallback
from bot.channels.wechat_mp.replay import ReplayGuard, nonce_store
from bot.channels.wechat_mp.sender import CHANNEL, PUSH_WINDOW, WechatMpSender
from bot.config.settings import Settings
from bot.outbox.outbox import Outbox
from bot.pipeline.pipeline import Pipeline

log = logging.getLogger(__name__)

WECHAT_MP_CALLBACK = web.AppKey("wechat_mp_callback", WechatMpCallback)
WECHAT_MP_API = web.AppKey("wechat_mp_api", WechatApi)


class WechatMpWiring:
    name = CHANNEL
    push_window = PUSH_WINDOW

    def add_routes(self, app: web.Application, settings: Settings) -> None:
        mp = settings.channels.wechat_mp
        if mp.enabled:
            app.router.add_get(mp.path, _verify)
            app.router.add_post(mp.path, _receive)

    def sender(self, app: web.Application, settings: Settings) -> Sender | None:
        mp = settings.channels.wechat_mp
        if not mp.enabled:
            return None
        api = WechatApi(app[keys.HTTP], app[keys.SESSIONS], app[keys.CLOCK], base_url=mp.api_base_url,
                        app_id=mp.app_id, app_secret=mp.app_secret,
                        refresh_margin_seconds=mp.token_refresh_margin_seconds)
        app[WECHAT_MP_API] = api
        return WechatMpSender(api, mp.reply_deadline_seconds)

    def start(self, app: web.Application, settings: Settings, pipeline: Pipeline, outbox: Outbox) -> None:
        mp = settings.channels.wechat_mp
        if mp.enabled:
            if not mp.encoding_aes_key:
                log.warning("WeChat callbacks are in plain mode: their signature does not cover the message, so "
                            "a captured request's URL is refused only by the replay check. Safe mode (安全模式) is "
                            "recommended: set [channels.wechat_mp] encoding_aes_key and choose it in the MP console")
            replays = ReplayGuard(nonce_store(app[keys.SESSIONS], CHANNEL, settings.storage.url),
                                  mp.timestamp_tolerance_seconds)
            app[WECHAT_MP_CALLBACK] = WechatMpCallback(mp, pipeline, outbox, app[keys.TASKS], app[keys.METRICS],
                                                       app[keys.CLOCK], replays)


WIRING = WechatMpWiring()


# Routes are fixed before start-up; the objects behind them are built in start-up.
async def _verify(request: web.Request) -> web.StreamResponse:
    return await request.app[WECHAT_MP_CALLBACK].verify_url(request)


async def _receive(request: web.Request) -> web.StreamResponse:
    return await request.app[WECHAT_MP_CALLBACK].receive(request)
