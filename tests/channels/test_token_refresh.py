"""Refreshing the access token never holds up a customer: while WeChat's token endpoint hangs,
every message still gets its passive reply inside the deadline."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.app.web import create_app
from bot.config.settings import Settings
from storage.models import Message
from tests.conftest import settings_for
from tests.support.db import rows
from tests.support.fake_wechat_api import FakeWechatApi
from tests.support.wechat import WechatServer

HOURS_REPLY = "亲，我们的门店营业时间是每天 10:00–22:00，线上客服 9:00–21:00。"


async def test_messages_get_passive_replies_while_the_token_endpoint_hangs(
        backend_url: str, fake_api: FakeWechatApi, example_settings: Settings, aiohttp_client: Any) -> None:
    fake_api.token_delay = 8.0
    client = await aiohttp_client(create_app(settings_for(example_settings, backend_url, fake_api.base_url)))
    server = WechatServer(client=client)
    # The service fetches its token at start-up; WeChat now sits on that request.
    await asyncio.wait_for(fake_api.token_requested.wait(), timeout=10)
    asked: list[asyncio.Task[dict[str, Any] | None]] = []
    while not fake_api.tokens_issued and len(asked) < 200:
        asked.append(asyncio.create_task(server.say(f"o-hang-{len(asked) % 5}", "几点开门")))
        await asyncio.sleep(0.25)
    answers = await asyncio.gather(*asked)
    assert fake_api.tokens_issued, "the token endpoint never answered"
    assert len(answers) >= 20
    # Passive XML answers, not `success` with a customer-service message later.
    assert [answer and answer["Content"] for answer in answers] == [HOURS_REPLY] * len(answers)
    await client.close()  # shutting down lets late work finish: a late push would go out now
    assert fake_api.sent == []
    out = await rows(backend_url, Message, Message.direction == "out")
    assert len(out) == len(answers) and {m.delivery for m in out} == {"passive"}
