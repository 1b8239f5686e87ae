"""A touch whose WeChat call hangs must not hold up its customer: their message is answered
passively, inside WeChat's deadline, while the call is still waiting."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from bot.app import keys
from bot.app.web import SENDERS, create_app
from bot.clock import SystemClock
from bot.outbox.dispatch import dispatch_due_touches
from storage.models import Customer, Message, Touch
from storage.touches import enqueue_touch
from tests.conftest import settings_for
from tests.support.fake_wechat_api import FakeWechatApi
from tests.support.wechat import APP_ID, APP_SECRET, WechatServer

HANGING = "您的订单已发货"  # the touch whose push hangs


@dataclass
class HangingWechatApi(FakeWechatApi):
    """Holds the push of HANGING until `release` is set; every other call goes through."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    hanging: int = 0

    async def _custom_send(self, request: web.Request) -> web.Response:
        if json.loads(await request.read()).get("text", {}).get("content") == HANGING:
            self.hanging += 1
            await self.release.wait()
        return await super()._custom_send(request)


@pytest.fixture
async def hanging_api(aiohttp_server: Any) -> HangingWechatApi:
    fake = HangingWechatApi(app_id=APP_ID, app_secret=APP_SECRET)
    fake.server = await aiohttp_server(fake.app())
    return fake


async def _until(condition: Any, what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"never happened: {what}")


async def test_a_customer_is_answered_while_their_touchs_wechat_call_hangs(
        backend_url, hanging_api, example_settings, aiohttp_client) -> None:
    settings = settings_for(example_settings, backend_url, hanging_api.base_url)
    # No quiet hours, and the sweeper left to this test: it dispatches by hand below.
    touches = settings.touches.model_copy(update={
        "quiet_hours_start": time(0), "quiet_hours_end": time(0), "dispatch_interval_seconds": 3600})
    settings = settings.model_copy(update={"touches": touches})
    client = await aiohttp_client(create_app(settings))
    server = WechatServer(client=client)
    app = client.app
    assert await server.say("o-alice", "你好") is not None  # opens her 48-hour window
    async with app[keys.SESSIONS]() as session, session.begin():
        alice = (await session.execute(select(Customer).where(Customer.external_id == "o-alice"))).scalar_one()
        await enqueue_touch(session, customer_id=alice.id, kind="service", idempotency_key="shipped:A1",
                            body={"type": "text", "text": HANGING}, due_at=datetime.now(UTC))

    dispatch = asyncio.create_task(dispatch_due_touches(app[keys.SESSIONS], app[SENDERS], touches,
                                                        SystemClock(), "test"))
    await _until(lambda: hanging_api.hanging == 1, "the touch's push reached WeChat")
    reply = await asyncio.wait_for(server.say("o-alice", "请问你们几点开门？"), timeout=30)
    assert reply is not None and reply["Content"]  # the passive answer, not `success` and a push later
    assert not dispatch.done() and hanging_api.hanging == 1  # …while the touch's call still hangs

    hanging_api.release.set()
    stats = await asyncio.wait_for(dispatch, timeout=30)
    assert stats.sent == 1
    async with app[keys.SESSIONS]() as session:
        touch = (await session.execute(select(Touch))).scalar_one()
        transcript = [(m.seq, m.direction, m.text) for m in (await session.execute(
            select(Message).where(Message.customer_id == alice.id).order_by(Message.seq))).scalars()]
    assert touch.status == "sent"
    assert [seq for seq, _, _ in transcript] == list(range(1, len(transcript) + 1))
    assert transcript[-1][1:] == ("out", HANGING)  # recorded once WeChat answered, after her chat
    assert ("in", "请问你们几点开门？") in [row[1:] for row in transcript]
