"""The real app with the group gateway on, against a fake gateway `send_url`, on every database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bot.app.web import create_app
from bot.config.settings import Settings
from tests.conftest import settings_for
from tests.support.fake_wechat_api import FakeWechatApi
from tests.support.group_gateway import SECRET, FakeGateway, Gateway

API_TOKEN = "group-tests-events-token-of-32-characters"


@pytest.fixture
async def fake_gateway(aiohttp_server: Any) -> FakeGateway:
    fake = FakeGateway()
    fake.server = await aiohttp_server(fake.app())
    return fake


@dataclass
class GroupApp:
    gateway: Gateway
    settings: Settings
    url: str

    @property
    def client(self) -> Any:
        return self.gateway.client


def group_settings(example: Settings, url: str, api_base_url: str, send_url: str, **gateway: Any) -> Settings:
    settings = settings_for(example, url, api_base_url)
    group_gateway = settings.channels.group_gateway.model_copy(update={
        "enabled": True, "secret": SECRET, "send_url": send_url, "bot_names": ["思语", "思语小助手"],
        "keywords": ["营业时间"], "welcome_gather_seconds": 0.5, **gateway})
    return settings.model_copy(update={
        "api": settings.api.model_copy(update={"token": API_TOKEN}),
        "channels": settings.channels.model_copy(update={"group_gateway": group_gateway}),
        "staff": settings.staff.model_copy(update={"cookie_secure": False})})


@pytest.fixture
async def group_app(aiohttp_client: Any, fake_api: FakeWechatApi, fake_gateway: FakeGateway,
                    example_settings: Settings, backend_url: str) -> Callable[..., Awaitable[GroupApp]]:
    async def start(clock: Any = None, settings_update: Callable[[Settings], Settings] | None = None,
                    **gateway: Any) -> GroupApp:
        settings = group_settings(example_settings, backend_url, fake_api.base_url, fake_gateway.url, **gateway)
        if settings_update is not None:
            settings = settings_update(settings)
        client = await aiohttp_client(create_app(settings, clock=clock))
        return GroupApp(Gateway(client), settings, backend_url)

    return start
