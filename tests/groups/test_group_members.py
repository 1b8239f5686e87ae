"""Group members are customers: one record with their Official Account customer when a unionid
links them, lifecycle signals from joins, messages and leaves, and everything proactive or from
staff reaching them privately, never in the group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp

from bot.config.settings import Settings
from flows.definitions import Flow
from storage.group_models import ChatGroup, GroupEntry
from storage.models import Customer, Message, StageChange
from tests.console.support import create_staff, login
from tests.groups.conftest import API_TOKEN
from tests.support.db import customer_row, events, rows

API = {"Authorization": f"Bearer {API_TOKEN}"}


class Clock:
    def __init__(self, now: datetime):
        self.value = now

    def now(self) -> datetime:
        return self.value


async def business_events(app, *items) -> None:
    response = await app.client.post("/api/v1/events", json=list(items), headers=API)
    body = await response.json()
    assert response.status == 200 and body["error"] == 0, body


def points(event_id: str, customer: dict, delta: int) -> dict:
    return {"id": event_id, "type": "points_changed", "occurred_at": "2026-11-30T10:00:00+08:00",
            "customer": customer, "data": {"delta": delta, "reason": "门店消费"}}


async def test_a_unionid_links_the_member_to_their_official_account_customer(group_app, fake_gateway):
    app = await group_app()
    await business_events(app, points("evt-1", {"openid": "o-1", "unionid": "un-1"}, 120))
    note = await app.gateway.say("u-1", "@思语 查积分", name="小王", unionid="un-1")
    assert [r["text"] for r in note] == ["已私信您，请查看私聊消息～"]
    [private] = await fake_gateway.wait_for(1)
    assert private["to"] == {"user_id": "u-1"} and "120 积分" in private["text"]
    official = await customer_row(app.url, "o-1")
    # The member's question and its answer are in the one record's transcript, marked as from the group…
    assert [(m.channel, m.direction) for m in await rows(app.url, Message, Message.customer_id == official.id)] \
        == [("group", "in"), ("group", "out")]
    # … and a message in a group opens no Official Account window.
    assert official.window_expires_at is None
    member = await customer_row(app.url, "u-1")
    assert (member.channel, member.unionid) == ("group", "un-1")


async def test_a_later_profile_update_links_a_member_seen_without_unionid(group_app, fake_gateway):
    app = await group_app()
    await app.gateway.say("u-9", "@思语 查积分", name="小李")
    [first] = await fake_gateway.wait_for(1)
    assert "还没有积分" in first["text"]
    await business_events(app, points("evt-2", {"openid": "o-9", "unionid": "un-9"}, 50),
                          {"id": "evt-3", "type": "profile_updated", "occurred_at": "2026-11-30T11:00:00+08:00",
                           "customer": {"openid": "u-9", "unionid": "un-9"}, "data": {}})
    await app.gateway.say("u-9", "@思语 查积分", name="小李")
    [_, second] = await fake_gateway.wait_for(2)
    assert "50 积分" in second["text"]


async def test_leaving_a_group_is_a_warning_signal_on_the_linked_record(group_app):
    app = await group_app()
    await business_events(app, {"id": "evt-5", "type": "order_paid", "occurred_at": "2026-11-20T10:00:00+08:00",
                                "customer": {"openid": "o-5", "unionid": "un-5"},
                                "data": {"order_id": "A5", "amount": "99.00"}})
    await app.gateway.join("u-5", unionids={"u-5": "un-5"})
    official = await customer_row(app.url, "o-5")
    assert official.stage == "purchase"
    await app.gateway.leave("u-5")
    official = await customer_row(app.url, "o-5")
    assert official.stage == "at_risk"
    [change] = await rows(app.url, StageChange, StageChange.customer_id == official.id, StageChange.to_stage == "at_risk")
    assert change.reason == "left 1 group(s) within 30 days"
    assert [e.data for e in await events(app.url, "group_left")] == [{"group": "g-100"}]
    assert [e.customer_id for e in await events(app.url, "group_joined")] == [official.id]


async def test_speaking_in_groups_on_several_days_counts_as_interest(group_app):
    clock = Clock(datetime(2026, 12, 1, 2, 0, tzinfo=UTC))
    app = await group_app(clock=clock)
    for day in range(3):
        await app.gateway.say("u-3", "今天有什么好物", name="小周")
        await app.gateway.say("u-3", "再问一句", name="小周")  # the same day: one interaction
        assert (await customer_row(app.url, "u-3")).stage == ("interest" if day == 2 else "contact")
        clock.value += timedelta(days=1)
    assert len(await events(app.url, "engagement")) == 3
    assert (await customer_row(app.url, "u-3")).last_active_at is not None  # chatter keeps them from churning


async def test_staff_replies_reach_a_member_privately(group_app, fake_gateway):
    app = await group_app()
    replies = await app.gateway.say("u-1", "@思语 转人工", name="小王")
    assert replies and replies[0]["mention"] == ["u-1"]
    await create_staff(app.url, "lin")
    async with aiohttp.ClientSession(base_url=str(app.client.make_url("/")),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        assert (await login(browser, "lin"))[0] == 303
        csrf = (await (await browser.get("/console/api/me")).json())["csrf"]
        [queued] = (await (await browser.get("/console/api/queue")).json())["queued"]
        headers = {"X-CSRF-Token": csrf}
        assert (await browser.post(f"/console/api/conversations/{queued['id']}/claim", json={},
                                   headers=headers)).status == 200
        sent = await browser.post(f"/console/api/conversations/{queued['id']}/reply",
                                  json={"text": "您好，我是客服小林"}, headers=headers)
        assert sent.status == 200 and (await sent.json())["delivery"] == "push"
    assert fake_gateway.private("u-1") == [{"id": fake_gateway.private("u-1")[0]["id"], "to": {"user_id": "u-1"},
                                            "text": "您好，我是客服小林"}]
    assert fake_gateway.posts() == []


async def test_touches_for_a_member_go_privately_through_the_gateway(group_app, fake_gateway):
    app = await group_app(settings_update=_hello_flow)
    await app.gateway.join("u-7")
    [hello] = await fake_gateway.wait_for(1, timeout=20)
    assert hello == {"id": hello["id"], "to": {"user_id": "u-7"}, "text": "u-7，欢迎加入会员群！"}
    assert hello["id"].startswith("siyu-t")


def _hello_flow(settings: Settings) -> Settings:
    flow = Flow.model_validate({
        "name": "group_hello", "kind": "service", "reentry": "once", "triggers": [{"event": "group_join"}],
        "steps": [{"type": "send", "text": "{nickname}，欢迎加入会员群！"}]})
    return settings.model_copy(update={
        "flows": [*settings.flows, flow],
        "touches": settings.touches.model_copy(update={"dispatch_interval_seconds": 0.2, "quiet_hours_service": False}),
        "channels": settings.channels.model_copy(update={"group_gateway": settings.channels.group_gateway.model_copy(
            update={"welcome": ""})})})


async def test_the_console_lists_groups_with_their_figures(group_app):
    app = await group_app()
    other = {"id": "g-200", "name": "直播粉丝群"}
    await app.gateway.join("u-1", "u-2", "u-3")
    await app.gateway.say("u-1", "大家好", name="小王")
    await app.gateway.say("u-2", "@思语 几点开门", name="小张")
    await app.gateway.say("u-2", "谢谢", name="小张")
    await app.gateway.leave("u-3")
    await app.gateway.say("u-8", "有人吗", name="小八", group=other)
    await create_staff(app.url, "ops", "operator")
    await create_staff(app.url, "lin")
    async with aiohttp.ClientSession(base_url=str(app.client.make_url("/")),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        assert (await login(browser, "lin"))[0] == 303
        assert (await browser.get("/console/api/groups")).status == 403  # staff: not theirs to see
    async with aiohttp.ClientSession(base_url=str(app.client.make_url("/")),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        assert (await login(browser, "ops"))[0] == 303
        listed = await (await browser.get("/console/api/groups")).json()
        by_name = {g["name"]: g for g in listed["groups"]}
        assert set(by_name) == {"门店会员群", "直播粉丝群"}
        store = by_name["门店会员群"]
        assert store["members"] == 2
        assert store["today"] == {"joins": 3, "leaves": 1, "messages": 3, "speakers": 2, "answers": 1}
        assert store["period"] == store["today"]
        assert by_name["直播粉丝群"]["today"]["messages"] == 1 and by_name["直播粉丝群"]["members"] == 1
        detail = await (await browser.get(f"/console/api/groups/{store['id']}")).json()
        assert [d["messages"] for d in detail["days"]] == [3]
        log = [(e["kind"], e["direction"], e["name"], e["text"]) for e in detail["log"]]
        assert log[:1] == [("join", "in", None, "")]
        assert ("message", "in", "小张", "@思语 几点开门") in log
        assert ("answer", "out", "小张", "小张，我们的门店营业时间是每天 10:00–22:00，线上客服 9:00–21:00。") in log
        page = await browser.get("/console/groups")
        assert page.status == 200 and "客户群" in await page.text()
    [group] = await rows(app.url, ChatGroup, ChatGroup.external_id == "g-100")
    assert len(await rows(app.url, GroupEntry, GroupEntry.group_id == group.id)) == 7
    assert len(await rows(app.url, Customer, Customer.channel == "group")) == 4
