"""Scheduled flow starts across restarts: a crontab time that falls while the service is stopped
fires once when it is back (within the misfire grace), and never again on later restarts."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.app.web import create_app
from bot.config.settings import Settings
from flows.definitions import Flow
from storage.models import Customer, Touch
from tests.conftest import settings_for
from tests.support.clock import FakeClock
from tests.support.db import rows
from tests.support.fake_wechat_api import FakeWechatApi
from tests.support.wechat import WechatServer

TIP = "亲，每日保养小贴士：真皮包请避免暴晒"
DAILY_TIP = Flow.model_validate({
    "name": "daily_tip", "kind": "service", "reentry": "always",
    "triggers": [{"schedule": "0 2 * * *"}],  # 02:00 UTC, 10:00 in Shanghai
    "steps": [{"type": "send", "text": "{nickname}，每日保养小贴士：真皮包请避免暴晒"}]})


class Service:
    """Starts and stops the real app on one database and one hand-moved clock."""

    def __init__(self, settings: Settings, clock: FakeClock, aiohttp_client: Any):
        self.settings, self.clock, self._client = settings, clock, aiohttp_client

    async def run(self, say: str = "你好") -> None:
        """Start, answer one message (start-up's sweeps run meanwhile), stop gracefully."""
        client = await self._client(create_app(self.settings, self.clock))
        assert await WechatServer(client=client).say("o-tip", say) is not None
        await client.close()  # stopping lets the running sweeps finish


@pytest.fixture
def service(backend_url: str, fake_api: FakeWechatApi, example_settings: Settings, aiohttp_client: Any) -> Service:
    settings = settings_for(example_settings, backend_url, fake_api.base_url)
    settings = settings.model_copy(update={"flows": [*settings.flows, DAILY_TIP]})
    return Service(settings, FakeClock(datetime(2026, 11, 23, 1, 0, tzinfo=UTC)), aiohttp_client)


async def tips(url: str) -> list[str]:
    [customer] = await rows(url, Customer, Customer.external_id == "o-tip")
    return [t.body["text"] for t in await rows(url, Touch, Touch.customer_id == customer.id)
            if t.body.get("text") == TIP]


async def test_a_scheduled_start_that_falls_during_a_restart_fires_once_after_it(service, backend_url):
    await service.run()  # 01:00: running, the 02:00 start is ahead
    service.clock.advance(minutes=90)  # stopped across 02:00; back at 02:30
    await service.run("几点开门")
    assert await tips(backend_url) == [TIP]
    service.clock.advance(minutes=10)
    await service.run("几点开门")  # a second restart the same morning: nothing new to fire
    assert await tips(backend_url) == [TIP]
    service.clock.advance(days=1)  # the next morning's start fires as usual
    await service.run("几点开门")
    assert await tips(backend_url) == [TIP, TIP]


async def test_a_scheduled_start_missed_by_more_than_the_grace_is_skipped_and_logged(service, backend_url, caplog):
    await service.run()
    service.clock.advance(hours=5)  # 02:00 was three hours ago: past the hour of grace
    with caplog.at_level(logging.WARNING, logger="flows.engine"):
        await service.run("几点开门")
    assert await tips(backend_url) == []
    assert any("daily_tip" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    service.clock.advance(days=1, hours=-4)  # 02:00 the next day: on time again
    await service.run("几点开门")
    assert await tips(backend_url) == [TIP]
