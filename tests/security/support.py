"""The real app on a given database, with the simulator, the events API and the Official
Account callback all switched on, for the hostile-input suites."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from bot.app.web import create_app
from bot.config.settings import Settings
from tests.conftest import settings_for
from tests.support.fake_wechat_api import FakeWechatApi
from tests.support.lifecycle import FixedClock
from tests.support.wechat import WechatServer

API_TOKEN = "hostile-input-token-0123456789abcdefghij"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def hostile_settings(example: Settings, url: str, api_base_url: str, **staff: Any) -> Settings:
    settings = settings_for(example, url, api_base_url)
    return settings.model_copy(update={
        "api": settings.api.model_copy(update={"token": API_TOKEN}),
        "staff": settings.staff.model_copy(update={"cookie_secure": False, **staff}),
    })


async def start(aiohttp_client: Any, example: Settings, url: str, fake_api: FakeWechatApi,
                mode: str = "plain") -> WechatServer:
    settings = hostile_settings(example, url, fake_api.base_url)
    client: TestClient = await aiohttp_client(create_app(settings, clock=FixedClock()))
    return WechatServer(client=client, mode=mode)


def event(event_id: str, kind: str, data: dict[str, Any] | None = None, openid: str = "o-100",
          at: str = "2026-11-23T10:00:00+08:00") -> dict[str, Any]:
    return {"id": event_id, "type": kind, "occurred_at": at, "customer": {"openid": openid}, "data": data or {}}


def visit(event_id: str, openid: str = "o-100") -> dict[str, Any]:
    return event(event_id, "store_visit", {"store_id": "SH-01"}, openid=openid)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value
