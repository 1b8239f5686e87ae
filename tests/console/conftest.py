"""The real app with the console, on SQLite, with a fake WeChat API; logged-in staff clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bot.app.web import create_app
from bot.config.settings import Settings
from tests.conftest import settings_for
from tests.console.support import Staff, create_staff, login
from tests.support.fake_wechat_api import FakeWechatApi
from tests.support.wechat import WechatServer


class FixedClock:
    def __init__(self, now: Any):
        self.now_value = now

    def now(self) -> Any:
        return self.now_value


@dataclass
class Console:
    server: WechatServer
    settings: Settings
    url: str

    @property
    def client(self) -> TestClient:
        return self.server.client

    async def staff(self, name: str, role: str = "staff") -> Staff:
        """A new account, logged in with its own cookie jar."""
        staff_id = await create_staff(self.url, name, role)
        client = self.browser()
        status, _ = await login(client, name)
        assert status == 303
        response = await client.get("/console/api/me")
        me = await response.json()
        self._clients.append(client)
        return Staff(client=client, id=staff_id, csrf=me["csrf"])

    def browser(self) -> aiohttp.ClientSession:
        """Another browser: its own cookie jar, against the same server."""
        client = aiohttp.ClientSession(base_url=str(self.client.make_url("/")),
                                       cookie_jar=aiohttp.CookieJar(unsafe=True))
        self._clients.append(client)
        return client

    _clients: list[aiohttp.ClientSession]


def console_settings(example: Settings, url: str, api_base_url: str, **staff: Any) -> Settings:
    settings = settings_for(example, url, api_base_url)
    return settings.model_copy(update={"staff": settings.staff.model_copy(
        update={"cookie_secure": False, **staff})})


@pytest.fixture
async def console(aiohttp_client: Any, fake_api: FakeWechatApi, example_settings: Settings,
                  sqlite_url: str) -> Callable[..., Awaitable[Console]]:
    made: list[Console] = []

    async def start(clock: Any = None, url: str | None = None, **staff: Any) -> Console:
        settings = console_settings(example_settings, url or sqlite_url, fake_api.base_url, **staff)
        client = await aiohttp_client(create_app(settings, clock=clock))
        found = Console(server=WechatServer(client=client), settings=settings, url=url or sqlite_url,
                        _clients=[])
        made.append(found)
        return found

    yield start
    for found in made:
        for client in found._clients:
            await client.close()
