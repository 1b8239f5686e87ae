"""A lifecycle sweep over thousands of customers never holds up a customer: messages sent while it
runs still get their passive replies inside WeChat's deadline."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from bot.app import keys
from bot.app.web import FLOWS, create_app
from bot.config.settings import Settings
from flows.lifecycle import lifecycle_sweep
from storage.models import Customer, Message
from tests.conftest import settings_for
from tests.support.clock import FakeClock
from tests.support.db import rows
from tests.support.fake_wechat_api import FakeWechatApi
from tests.support.lifecycle import add_customers
from tests.support.wechat import WechatServer

HOURS_REPLY = "亲，我们的门店营业时间是每天 10:00–22:00，线上客服 9:00–21:00。"
SILENT = 2000


async def test_messages_get_passive_replies_while_a_lifecycle_sweep_runs(
        backend_url: str, fake_api: FakeWechatApi, example_settings: Settings, aiohttp_client: Any) -> None:
    clock = FakeClock()
    client = await aiohttp_client(create_app(settings_for(example_settings, backend_url, fake_api.base_url), clock))
    app = client.app
    server = WechatServer(client=client)
    # Customers silent for over a year: the sweep churns every one and starts their win-back flow.
    await add_customers(app[keys.SESSIONS], [
        {"external_id": f"o-silent-{i}", "stage": "interest", "created_at": clock.now() - timedelta(days=400),
         "last_inbound_at": clock.now() - timedelta(days=400)} for i in range(SILENT)])
    assert await server.say("o-busy", "几点开门") is not None

    sweep = asyncio.create_task(lifecycle_sweep(app[keys.SESSIONS], app[keys.SETTINGS].lifecycle, clock.now(),
                                                app[FLOWS]))
    asked: list[asyncio.Task[dict[str, Any] | None]] = []
    while not sweep.done() and len(asked) < 600:
        asked.append(asyncio.create_task(server.say(f"o-busy-{len(asked) % 5}", "几点开门")))
        await asyncio.sleep(0.1)
    counts = await sweep
    answers = await asyncio.gather(*asked)

    assert counts["churned"] == SILENT
    assert len(answers) >= 5
    # Every one a passive XML answer, not `success` with a customer-service message later.
    assert [answer and answer["Content"] for answer in answers] == [HOURS_REPLY] * len(answers)
    await client.close()
    assert fake_api.sent == []
    busy = [c.id for c in await rows(backend_url, Customer, Customer.external_id.like("o-busy-%"))]
    out = await rows(backend_url, Message, Message.direction == "out", Message.customer_id.in_(busy))
    assert len(out) == len(answers) and {m.delivery for m in out} == {"passive"}
