"""The simulator's group room (web API, page, terminal): every group behaviour without a gateway."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bot.app.web import create_app
from storage.group_models import GroupDay
from tests.support.db import customer_row, rows
from tests.support.group_gateway import settled

ROOT = Path(__file__).resolve().parents[2]
GROUP = "门店会员群"


async def room(aiohttp_client, example_settings, url, **gateway):
    settings = example_settings.model_copy(update={
        "storage": example_settings.storage.model_copy(update={"url": url}),
        "channels": example_settings.channels.model_copy(update={
            "group_gateway": example_settings.channels.group_gateway.model_copy(update=gateway)})})
    return await aiohttp_client(create_app(settings))


async def send(client, **body):
    response = await client.post("/simulator/api/group", json={"group": GROUP, **body})
    data = await response.json()
    assert response.status == 200, data
    return data


async def group_log(client, after=0):
    response = await client.get("/simulator/api/group", params={"group": GROUP, "after": str(after)})
    assert response.status == 200
    return (await response.json())["entries"]


async def test_the_room_answers_mentions_and_keywords_and_keeps_quiet_otherwise(aiohttp_client, example_settings,
                                                                               backend_url):
    client = await room(aiohttp_client, example_settings, backend_url)
    await send(client, type="join", members=["amy", "ben"])
    assert (await send(client, member="amy", text="大家好呀"))["replies"] == []
    hours = await send(client, member="ben", text="@思语 几点开门")
    assert hours["replies"] == [{"text": "ben，我们的门店营业时间是每天 10:00–22:00，线上客服 9:00–21:00。",
                                 "mention": ["ben"]}]
    keyword = await send(client, member="amy", text="周末营业时间一样吗")
    assert [r["mention"] for r in keyword["replies"]] == [["amy"]]
    flagged = await send(client, member="amy", text="在吗", mentioned=True)
    assert flagged["replies"] and flagged["replies"][0]["mention"] == ["amy"]
    log = await group_log(client)
    assert [(e["kind"], e["direction"]) for e in log][:3] == [("join", "in"), ("message", "in"), ("message", "in")]
    assert next(e["text"] for e in log if e["kind"] == "answer") == hours["replies"][0]["text"]
    # The bot's posts are stored just after its answer went back.
    [day] = await settled(lambda: rows(backend_url, GroupDay, order=GroupDay.day), lambda found: found[0].answers == 3)
    assert (day.members, day.messages, day.answers) == (2, 4, 3)
    assert (await customer_row(backend_url, "amy")).source == f"group:{GROUP}"


async def test_a_personal_answer_reaches_the_members_private_chat(aiohttp_client, example_settings, backend_url):
    client = await room(aiohttp_client, example_settings, backend_url)
    cursor = (await (await client.get("/simulator/api/messages", params={"user": "amy"})).json())["last_id"]
    answer = await send(client, member="amy", text="@思语 查积分")
    assert answer["replies"] == [{"text": "已私信您，请查看私聊消息～", "mention": ["amy"]}]
    assert "积分" in answer["private"][0]

    async def private():
        response = await client.get("/simulator/api/messages", params={"user": "amy", "after": str(cursor)})
        return (await response.json())["messages"]

    [message] = await settled(private, lambda found: len(found) == 1)
    assert message["text"] == answer["private"][0]


async def test_a_wave_of_joins_is_welcomed_once(aiohttp_client, example_settings, backend_url):
    client = await room(aiohttp_client, example_settings, backend_url, welcome_gather_seconds=0.5)
    cursor = (await (await client.get("/simulator/api/group", params={"group": GROUP})).json())["last_id"]
    for name in ("amy", "ben", "cat"):
        assert (await send(client, type="join", members=[name]))["replies"] == []
    welcomes = await settled(lambda: _welcomes(client, cursor), lambda found: len(found) == 1)
    assert welcomes == [{"members": ["amy", "ben", "cat"], "text": f"欢迎新朋友加入{GROUP}！有任何问题 @我 就好～"}]
    await send(client, type="leave", members=["cat"])
    log = await group_log(client, cursor)
    assert [e["members"] for e in log if e["kind"] in ("join", "leave")] == [["amy"], ["ben"], ["cat"], ["cat"]]


async def _welcomes(client, after):
    return [{"members": e["members"], "text": e["text"]} for e in await group_log(client, after)
            if e["kind"] == "welcome"]


async def test_resends_with_an_id_are_answered_once(aiohttp_client, example_settings, backend_url):
    client = await room(aiohttp_client, example_settings, backend_url)
    first = await send(client, member="amy", text="@思语 几点开门", id="m-1")
    again = await send(client, member="amy", text="@思语 几点开门", id="m-1")
    assert again["replies"] == first["replies"] and again["duplicate"] is True
    [day] = await rows(backend_url, GroupDay, order=GroupDay.day)
    assert (day.messages, day.answers) == (1, 1)


async def test_bad_room_requests_say_what_to_fix(aiohttp_client, example_settings, backend_url):
    client = await room(aiohttp_client, example_settings, backend_url)
    cases = [(b"{nope", "invalid JSON"), (b'{"member": "amy", "text": "hi"}', "'group'"),
             (b'{"group": "g", "text": "hi"}', "'member'"), (b'{"group": "g", "member": "amy"}', "'text'"),
             (b'{"group": "g", "type": "join", "members": []}', "'members'"),
             (b'{"group": "g", "type": "wave", "members": ["a"]}', "'type'"),
             (b'{"group": "g", "member": "a\\u0000b", "text": "hi"}', "NUL"),
             (b'{"group": "g", "member": "amy", "text": "\\ud83d"}', "surrogate")]
    for body, expected in cases:
        response = await client.post("/simulator/api/group", data=body)
        assert response.status == 400, body
        assert expected in (await response.json())["error"]
    assert (await client.get("/simulator/api/group")).status == 400
    assert (await client.get("/simulator/api/group", params={"group": "g", "after": "9" * 30})).status == 400
    # Like the rest of the simulator, the room answers only this machine by default.
    proxied = await client.post("/simulator/api/group", json={"group": "g", "member": "amy", "text": "hi"},
                                headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status == 403
    assert await rows(backend_url, GroupDay, order=GroupDay.day) == []


async def test_the_room_page_is_served(aiohttp_client, example_settings, sqlite_url):
    client = await room(aiohttp_client, example_settings, sqlite_url)
    page = await (await client.get("/simulator/group")).text()
    assert "群聊模拟" in page and 'src="simulator-group.js"' in page
    script = await client.get("/simulator/simulator-group.js")
    assert script.status == 200 and "api/group" in await script.text()
    assert 'href="group"' in await (await client.get("/simulator/")).text()


def test_terminal_group_chat(backend_url, tmp_path):
    config = tmp_path / "config.toml"
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    config.write_text(text.replace("welcome_gather_seconds = 5", "welcome_gather_seconds = 0"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "bot", "chat", "--config", str(config), "--group", GROUP, "--user", "amy"],
        input="/join amy ben\n大家好\n@思语 几点开门\n/as ben\n@思语 查积分\n/leave ben\n/quit\n",
        capture_output=True, text=True, timeout=90, cwd=ROOT, check=False,
        env={**os.environ, "SIYU_DATABASE_URL": backend_url},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"群 {GROUP} · 机器人: @amy amy，我们的门店营业时间是每天 10:00–22:00" in out
    assert f"群 {GROUP} · 机器人: @ben 已私信您，请查看私聊消息～" in out
    assert "私信 → ben · 机器人: ben，您目前还没有积分" in out
    assert f"群 {GROUP} · 机器人: @amy @ben 欢迎新朋友加入{GROUP}" in out
    assert out.count("机器人:") == 4  # 大家好 was left unanswered
    asyncio.run(_left(backend_url))


async def _left(url):
    [day] = await rows(url, GroupDay, order=GroupDay.day)
    assert (day.joins, day.leaves, day.messages) == (2, 1, 3)
