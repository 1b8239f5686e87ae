"""Stopping the service in the middle of a touch's WeChat call: the call and its record finish
before the service stops, so after the restart nothing is sent twice and nothing is lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time
from typing import Any

import pytest
from sqlalchemy import select

from bot.app import keys
from bot.app.web import SENDERS, create_app
from bot.clock import SystemClock
from bot.config.settings import Settings
from bot.outbox.dispatch import dispatch_due_touches
from storage.models import Customer, Message, Touch
from storage.touches import enqueue_touch
from tests.conftest import settings_for
from tests.support.db import rows
from tests.support.fake_wechat_api import HoldingWechatApi
from tests.support.wechat import APP_ID, APP_SECRET, WechatServer

SHIPPED = "您的订单已发货"


@pytest.fixture
async def holding_api(aiohttp_server: Any) -> HoldingWechatApi:
    fake = HoldingWechatApi(app_id=APP_ID, app_secret=APP_SECRET, hold=SHIPPED)
    fake.server = await aiohttp_server(fake.app())
    return fake


def with_dispatch_every(settings: Settings, seconds: float) -> Settings:
    touches = settings.touches.model_copy(update={
        "quiet_hours_start": time(0), "quiet_hours_end": time(0), "dispatch_interval_seconds": seconds})
    return settings.model_copy(update={"touches": touches})


async def test_a_shutdown_during_a_touchs_wechat_call_sends_it_once_and_records_it(
        backend_url, holding_api, example_settings, aiohttp_client) -> None:
    settings = with_dispatch_every(settings_for(example_settings, backend_url, holding_api.base_url), 0.2)
    client = await aiohttp_client(create_app(settings))
    assert await WechatServer(client=client).say("o-ship", "你好") is not None  # opens her 48-hour window
    async with client.app[keys.SESSIONS]() as session, session.begin():
        customer = (await session.execute(select(Customer).where(Customer.external_id == "o-ship"))).scalar_one()
        await enqueue_touch(session, customer_id=customer.id, kind="service", idempotency_key="shipped:A7",
                            body={"type": "text", "text": SHIPPED}, due_at=datetime.now(UTC))
    await holding_api.wait_until_held()  # the dispatch sweeper's call is at WeChat now

    stopping = asyncio.create_task(client.close())
    await asyncio.sleep(0.5)
    assert not stopping.done()  # the service waits for the call in flight…
    holding_api.release.set()  # …WeChat answers "ok"…
    await asyncio.wait_for(stopping, timeout=30)  # …and the stop completes once it is recorded

    # Restarted: the next dispatch finds nothing left to send.
    restarted = await aiohttp_client(create_app(with_dispatch_every(settings, 3600)))
    await dispatch_due_touches(restarted.app[keys.SESSIONS], restarted.app[SENDERS], settings.touches,
                               SystemClock(), "after-restart")
    await restarted.close()

    assert [p["text"]["content"] for p in holding_api.sent if "text" in p] == [SHIPPED]
    [touch] = await rows(backend_url, Touch, Touch.idempotency_key == "shipped:A7")
    assert touch.status == "sent"
    transcript = await rows(backend_url, Message, Message.customer_id == customer.id, Message.text == SHIPPED)
    assert len(transcript) == 1
