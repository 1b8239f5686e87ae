"""Identifiers longer than the column they are stored in are refused at the channel's edge with
400 and nothing stored: on SQLite such a value was once stored whole in a 128-character column,
on PostgreSQL it was a 500 every time (so WeChat retried it forever)."""

from __future__ import annotations

from storage.models import Customer
from tests.security.support import start
from tests.support.db import messages, rows
from tests.support.wechat import event_xml, message_xml, text_xml


async def test_a_60000_character_from_user_name_is_refused_with_400(aiohttp_client, example_settings, backend_url,
                                                                     fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    status, body = await server.post(text_xml("o" * 60_000, "你好"))
    assert status == 400 and "FromUserName" in body
    assert await messages(backend_url) == []
    assert await rows(backend_url, Customer) == []
    status, _ = await server.post(text_xml("o" * 128, "你好"))  # the longest that fits is taken
    assert status == 200


async def test_over_long_message_ids_and_follow_keys_are_refused_with_400(aiohttp_client, example_settings,
                                                                          backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    over_long = [
        message_xml("o-1", "text", {"Content": "你好"}, msg_id="9" * 200),
        event_xml("o-1", "subscribe", {"EventKey": "qrscene_" + "s" * 200}),
        event_xml("o-1", "x" * 300),
        event_xml("o-1", "subscribe", create_time="1" * 200),
        text_xml("o-1", "你好").replace("gh_siyu_test", "g" * 300),
    ]
    for xml in over_long:
        status, body = await server.post(xml)
        assert status == 400, (xml[:200], body)
    assert await messages(backend_url) == []
    status, _ = await server.post(event_xml("o-1", "VIEW", {"EventKey": "https://shop.example.com/" + "p" * 600}))
    assert status == 200  # a menu link may be long: it is stored in the message, not as a source


async def test_an_over_long_simulator_event_key_is_refused_with_400(aiohttp_client, example_settings, backend_url,
                                                                    fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    response = await server.client.post("/simulator/api/messages",
                                        json={"user": "amy", "event": "subscribe", "key": "k" * 129})
    assert response.status == 400 and "'key'" in (await response.json())["error"]
    assert await messages(backend_url) == []
