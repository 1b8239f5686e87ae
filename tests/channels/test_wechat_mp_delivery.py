"""How an Official Account answer of several messages reaches the customer: the first in the
passive reply, the others pushed after it, and no push beyond what the window allows."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiohttp import web

from bot.app.web import create_app
from bot.config.settings import Settings
from flows.definitions import Flow
from tests.conftest import settings_for
from tests.support.db import database_held, messages
from tests.support.fake_wechat_api import FakeWechatApi
from tests.support.wechat import WechatServer, event_xml

WELCOME = ["欢迎关注！", "新人礼已放入您的账户。", "回复“会员”查看权益。", "回复“优惠”查看活动。"]


def welcome_flow(texts: list[str]) -> Flow:
    """A welcome of several messages, all sent while the follow event is answered."""
    return Flow.model_validate({
        "name": "welcome_series", "kind": "service", "reentry": "always", "triggers": [{"event": "subscribe"}],
        "steps": [{"type": "send", "text": text} for text in texts],
    })


async def start(aiohttp_client: Any, example_settings: Settings, url: str, fake_api: FakeWechatApi,
                welcome: list[str], *, hold_replies: bool = False, **mp: Any) -> WechatServer:
    settings = settings_for(example_settings, url, fake_api.base_url, **mp)
    settings = settings.model_copy(update={"flows": [welcome_flow(welcome)]})
    app = create_app(settings)
    if hold_replies:
        async def give_pushes_a_head_start(request: web.Request, response: web.StreamResponse) -> None:
            # Before the callback's response goes out, let any push already under way reach WeChat,
            # so one started too early is seen arriving first.
            with contextlib.suppress(TimeoutError):
                await fake_api.wait_for_sent(1, timeout=0.5)

        app.on_response_prepare.append(give_pushes_a_head_start)
    return WechatServer(client=await aiohttp_client(app))


async def stored_out(url: str, openid: str, pushes: int) -> list[Any]:
    """The customer's outgoing messages once `pushes` of them were pushed or refused."""
    for _ in range(200):
        out = [m for m in await messages(url, openid) if m.direction == "out"]
        if sum(m.delivery in ("push", "failed") for m in out) >= pushes:
            return out
        await asyncio.sleep(0.05)
    pytest.fail(f"fewer than {pushes} pushes were settled")


async def test_follow_ups_reach_wechat_only_after_the_passive_reply(aiohttp_client, example_settings, backend_url,
                                                                    fake_api) -> None:
    server = await start(aiohttp_client, example_settings, backend_url, fake_api, WELCOME[:3], hold_replies=True)
    status, body = await server.post(event_xml("o-new", "subscribe"))
    assert status == 200
    reply = server.read_reply(body)
    fake_api.arrivals.append("passive reply")
    assert reply is not None and reply["Content"] == WELCOME[0]
    sent = await fake_api.wait_for_sent(2)
    assert fake_api.arrivals == ["passive reply", "push", "push"]
    assert [m["text"]["content"] for m in sent] == WELCOME[1:3]
    out = await stored_out(backend_url, "o-new", 2)
    assert [(m.text, m.delivery) for m in out] == [(WELCOME[0], "passive"), (WELCOME[1], "push"),
                                                   (WELCOME[2], "push")]


async def test_follow_ups_beyond_the_window_quota_are_not_sent_and_say_why(aiohttp_client, example_settings,
                                                                         backend_url, fake_api) -> None:
    # A follow opens a window of 3 pushes within a minute; the passive reply does not count.
    server = await start(aiohttp_client, example_settings, backend_url, fake_api, WELCOME + ["还有一条。"])
    assert (await server.post(event_xml("o-new", "subscribe")))[0] == 200
    out = await stored_out(backend_url, "o-new", 4)
    assert [m.delivery for m in out] == ["passive", "push", "push", "push", "failed"]
    assert out[-1].payload["error"] == "window_quota_used"
    assert [m["text"]["content"] for m in fake_api.sent] == [m.text for m in out[1:4]]


async def test_a_late_answer_is_pushed_within_the_window_quota_and_the_rest_recorded(
        aiohttp_client, example_settings, backend_url, fake_api) -> None:
    server = await start(aiohttp_client, example_settings, backend_url, fake_api, WELCOME,
                         reply_deadline_seconds=0.001)
    async with database_held(backend_url):
        assert await server.post(event_xml("o-late", "subscribe")) == (200, "success")
    out = await stored_out(backend_url, "o-late", 4)
    # Missed the deadline: every message is a push, and the follow's window holds three.
    assert [m.delivery for m in out] == ["push", "push", "push", "failed"]
    assert out[-1].payload["error"] == "window_quota_used"
    assert [m["text"]["content"] for m in fake_api.sent] == WELCOME[:3]
