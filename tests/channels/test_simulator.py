"""The simulator: web chat API and page, and `siyu chat` in a terminal, on the same pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.app.web import create_app
from tests.support.db import customer_row, messages

ROOT = Path(__file__).resolve().parents[2]
HOURS_REPLY = "亲，我们的门店营业时间是每天 10:00–22:00，线上客服 9:00–21:00。"


async def simulator(aiohttp_client, example_settings, url):
    settings = example_settings.model_copy(update={
        "storage": example_settings.storage.model_copy(update={"url": url})})
    return await aiohttp_client(create_app(settings))


async def test_api_answers_and_stores(aiohttp_client, example_settings, backend_url):
    client = await simulator(aiohttp_client, example_settings, backend_url)
    response = await client.post("/simulator/api/messages", json={"user": "amy", "text": "几点开门"})
    assert response.status == 200
    assert (await response.json())["replies"] == [HOURS_REPLY]
    stored = await messages(backend_url, "amy")
    assert [(m.channel, m.direction) for m in stored] == [("simulator", "in"), ("simulator", "out")]


async def test_unknown_words_fall_back(aiohttp_client, example_settings, backend_url):
    client = await simulator(aiohttp_client, example_settings, backend_url)
    body = await (await client.post("/simulator/api/messages", json={"user": "amy", "text": "qwertyuiop"})).json()
    assert body["replies"] == [example_settings.replies.fallback]


async def test_follow_event_gets_the_welcome_by_source(aiohttp_client, example_settings, backend_url):
    client = await simulator(aiohttp_client, example_settings, backend_url)
    response = await client.post("/simulator/api/messages",
                                 json={"user": "ben", "event": "subscribe", "key": "live_stream"})
    [welcome] = (await response.json())["replies"]
    assert welcome.startswith("感谢从直播间关注")  # the onboarding flow welcomes by source
    assert (await customer_row(backend_url, "ben")).source == "live_stream"


async def test_bad_requests_say_what_to_fix(aiohttp_client, example_settings, backend_url):
    client = await simulator(aiohttp_client, example_settings, backend_url)
    cases = [
        (b"{not json", "invalid JSON"),
        (b'["a"]', "JSON object"),
        (b'{"user": "", "text": "hi"}', "'user'"),
        (b'{"user": "amy"}', "'text'"),
        (b'{"user": "amy", "text": "x", "event": "dance"}', "'event'"),
        (('{"user": "amy", "text": "' + "长" * 3000 + '"}').encode(), "longer than"),
    ]
    for body, expected in cases:
        response = await client.post("/simulator/api/messages", data=body)
        assert response.status == 400, body
        assert expected in (await response.json())["error"]
    assert await messages(backend_url) == []


async def test_client_message_id_makes_resends_idempotent(aiohttp_client, example_settings, backend_url):
    client = await simulator(aiohttp_client, example_settings, backend_url)
    for _ in range(2):
        body = await (await client.post("/simulator/api/messages",
                                        json={"user": "amy", "text": "几点开门", "id": "m-1"})).json()
        assert body["replies"] == [HOURS_REPLY]
    assert body["duplicate"] is True
    assert len(await messages(backend_url, "amy")) == 2


async def test_page_is_served(aiohttp_client, example_settings, backend_url):
    client = await simulator(aiohttp_client, example_settings, backend_url)
    response = await client.get("/simulator")
    assert response.status == 200 and response.url.path == "/simulator/"
    page = await response.text()
    assert "Siyu 模拟器" in page and 'src="simulator.js"' in page
    assert "api/messages" in await (await client.get("/simulator/simulator.js")).text()


def test_terminal_chat_talks_through_the_same_pipeline(backend_url, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.example.toml").read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "bot", "chat", "--config", str(config), "--user", "carl"],
        input="/follow\n几点开门\n/quit\n", capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "SIYU_DATABASE_URL": backend_url},
    )
    assert result.returncode == 0, result.stderr
    assert "机器人: 欢迎关注" in result.stdout
    assert f"机器人: {HOURS_REPLY}" in result.stdout
