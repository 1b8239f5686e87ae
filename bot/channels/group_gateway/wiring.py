"""How a group gateway joins the app: `POST /group/hook`, the sender to its `send_url` (private
messages and posts into groups), and its room in the shared group machinery."""

from __future__ import annotations

from aiohttp import web

from bot.app import keys
from bot.channels.base import Sender
from bot.channels.group_gateway.hook import GroupHook
from bot.channels.group_gateway.sender import CHANNEL, GatewaySender
from bot.config.settings import Settings
from bot.outbox.outbox import Outbox
from bot.pipeline.pipeline import Pipeline

GROUP_HOOK = web.AppKey("group_hook", GroupHook)
GATEWAY_SENDER = web.AppKey("group_gateway_sender", GatewaySender)


class GroupGatewayWiring:
    name = CHANNEL
    push_window = None

    def add_routes(self, app: web.Application, settings: Settings) -> None:
        gateway = settings.channels.group_gateway
        if gateway.enabled:
            app.router.add_post(gateway.path, _receive)

    def sender(self, app: web.Application, settings: Settings) -> Sender | None:
        gateway = settings.channels.group_gateway
        if not gateway.enabled:
            return None
        sender = GatewaySender(app[keys.HTTP], gateway.send_url, gateway.secret, gateway.send_timeout_seconds)
        app[GATEWAY_SENDER] = sender
        return sender

    def start(self, app: web.Application, settings: Settings, pipeline: Pipeline, outbox: Outbox) -> None:
        gateway = settings.channels.group_gateway
        if gateway.enabled:
            groups = app[keys.GROUPS]
            groups.posts.add_poster(CHANNEL, app[GATEWAY_SENDER])
            app[GROUP_HOOK] = GroupHook(gateway, groups.room(CHANNEL, pipeline, outbox), app[keys.METRICS],
                                        app[keys.CLOCK])


WIRING = GroupGatewayWiring()


async def _receive(request: web.Request) -> web.StreamResponse:
    return await request.app[GROUP_HOOK].receive(request)
