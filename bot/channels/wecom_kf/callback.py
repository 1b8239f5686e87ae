"""The WeCom Customer Service callback: URL check, and `kf_msg_or_event` notifications answered at
once, the messages pulled in the background (`KfPuller`) — WeCom retries after about 5 s."""

from __future__ import annotations

import logging

from aiohttp import web

from bot.app.background import BackgroundTasks
from bot.app.metrics import Metrics
from bot.channels.wecom.callback import CallbackRefused, WecomCallbackEdge
from bot.channels.wecom_kf.parse import CHANNEL
from bot.channels.wecom_kf.puller import KfPuller
from bot.config.settings import WecomKfSettings

log = logging.getLogger(__name__)

SUCCESS = "success"
FIELD_LIMITS = {"Token": 255, "OpenKfId": 64, "ToUserName": 128, "Event": 64, "MsgType": 32}


class WecomKfCallback:
    def __init__(self, settings: WecomKfSettings, puller: KfPuller, tasks: BackgroundTasks, metrics: Metrics):
        self._edge = WecomCallbackEdge.build(settings.token, settings.encoding_aes_key, settings.corp_id,
                                             timestamp_tolerance_seconds=settings.timestamp_tolerance_seconds,
                                             max_body_bytes=settings.max_body_bytes)
        self._puller = puller
        self._tasks = tasks
        self._metrics = metrics

    def _refuse(self, refused: CallbackRefused) -> web.HTTPException:
        self._metrics.rejected.labels(CHANNEL, refused.reason).inc()
        if refused.status is web.HTTPRequestEntityTooLarge:
            limit = self._edge.max_body_bytes
            return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1)
        return refused.status(text=refused.reason)

    async def verify_url(self, request: web.Request) -> web.Response:
        try:
            return web.Response(text=self._edge.verify_url(request))
        except CallbackRefused as refused:
            raise self._refuse(refused) from None

    async def receive(self, request: web.Request) -> web.Response:
        try:
            fields = await self._edge.receive(request)
        except CallbackRefused as refused:
            raise self._refuse(refused) from None
        for name, limit in FIELD_LIMITS.items():
            value = fields.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                raise self._refuse(CallbackRefused(web.HTTPBadRequest, f"{name} is not text of at most {limit}"))
        event = str(fields.get("Event") or "")
        if event == "kf_msg_or_event":
            open_kfid = fields.get("OpenKfId")
            if not open_kfid:
                raise self._refuse(CallbackRefused(web.HTTPBadRequest, "OpenKfId is missing"))
            self._metrics.inbound.labels(CHANNEL, "notification").inc()
            # Answered now; the pull runs on (a retried notification just pulls again, from the
            # stored cursor, which is harmless).
            self._tasks.spawn(self._puller.notified(str(open_kfid), fields.get("Token")), name="wecom_kf pull")
        else:
            log.info("WeCom kf callback event %r acknowledged", event[:64])
        return web.Response(text=SUCCESS)
