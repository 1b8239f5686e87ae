"""The channels this service speaks. Adding one: its folder under bot/channels/ (with a wiring
like those below) and one line in CHANNELS."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from bot.channels.base import Sender
from bot.channels.group_gateway.wiring import WIRING as GROUP_GATEWAY
from bot.channels.simulator.wiring import WIRING as SIMULATOR
from bot.channels.wechat_mp.wiring import WIRING as WECHAT_MP
from bot.channels.wecom_kf.wiring import WIRING as WECOM_KF
from bot.config.settings import Settings
from bot.outbox.outbox import Outbox
from bot.pipeline.pipeline import Pipeline
from flows.push_window import PushWindow


class ChannelWiring(Protocol):
    """What the app needs of a channel: its name and window rules, its routes (added before
    start-up), its sender and its inbound side (built in start-up). A channel its settings
    switch off adds no routes and returns no sender."""

    @property
    def name(self) -> str: ...

    @property
    def push_window(self) -> PushWindow | None: ...

    def add_routes(self, app: web.Application, settings: Settings) -> None: ...

    def sender(self, app: web.Application, settings: Settings) -> Sender | None: ...

    def start(self, app: web.Application, settings: Settings, pipeline: Pipeline, outbox: Outbox) -> None: ...


CHANNELS: tuple[ChannelWiring, ...] = (
    SIMULATOR,
    WECHAT_MP,
    WECOM_KF,
    GROUP_GATEWAY,
)


def simulated_channels() -> frozenset[str]:
    """The channels whose users are made up by whoever types into them (a wiring says
    `simulated = True`): business events never name their customers."""
    return frozenset(channel.name for channel in CHANNELS if getattr(channel, "simulated", False))


def push_windows() -> dict[str, PushWindow]:
    """Each channel's declared window rules, for the stage that opens windows on inbound actions."""
    return {channel.name: channel.push_window for channel in CHANNELS if channel.push_window is not None}
