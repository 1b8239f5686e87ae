"""POST /group/hook: signed gateway events in; answers in the response, private messages and
welcomes out to the gateway's send_url; every event stored once."""

from __future__ import annotations

import time

from storage.group_models import ChatGroup, GroupDay, GroupEntry, GroupMembership
from storage.models import Customer, Message
from tests.support.db import customer_row, rows
from tests.support.group_gateway import membership, message, settled

HOURS_REPLY = "小王，我们的门店营业时间是每天 10:00–22:00，线上客服 9:00–21:00。"


async def test_a_mention_is_answered_in_the_group_mentioning_the_asker(group_app):
    app = await group_app()
    replies = await app.gateway.say("u-1", "@思语 几点开门", name="小王")
    assert replies == [{"group_id": "g-100", "text": HOURS_REPLY, "mention": ["u-1"]}]


async def test_only_mentions_and_keywords_are_answered_and_every_message_is_stored(group_app):
    app = await group_app()
    assert await app.gateway.say("u-1", "大家好，今天有活动吗", name="小王") == []  # chatter: silence
    assert await app.gateway.say("u-2", "@小李 几点开门", name="小张") == []  # someone else is asked
    assert await app.gateway.say("u-3", "思语 几点开门") == []  # no @: not a mention
    mentioned = await app.gateway.say("u-1", "几点开门", name="小王", mentioned=True)
    assert [r["text"] for r in mentioned] == [HOURS_REPLY]
    not_mentioned = await app.gateway.say("u-1", "@思语 几点开门", name="小王", mentioned=False)
    assert not_mentioned == []  # the gateway says it was not a mention of the bot
    keyword = await app.gateway.say("u-2", "请问周末营业时间有变化吗", name="小张")
    assert [r["mention"] for r in keyword] == [["u-2"]] and "营业时间" in keyword[0]["text"]
    long_name = await app.gateway.say("u-4", "@思语小助手\u2005几点开门", name="小王")
    assert [r["text"] for r in long_name] == [HOURS_REPLY]

    inbound = await rows(app.url, GroupEntry, GroupEntry.direction == "in")
    assert len(inbound) == 7
    assert [e.addressed for e in inbound] == [False, False, False, True, False, True, True]
    # The bot's posts are stored just after its answer went back.
    [day] = await settled(lambda: rows(app.url, GroupDay, order=GroupDay.day), lambda found: found[0].answers == 3)
    assert (day.messages, day.speakers, day.answers) == (7, 4, 3)
    # Only the addressed messages reach a member's transcript, with their answer.
    transcript = await rows(app.url, Message, Message.channel == "group")
    assert [m.direction for m in transcript] == ["in", "out"] * 3


async def test_a_personal_answer_goes_privately_and_the_group_only_gets_a_note(group_app, fake_gateway):
    app = await group_app()
    replies = await app.gateway.say("u-1", "@思语 查积分", name="小王")
    assert replies == [{"group_id": "g-100", "text": "已私信您，请查看私聊消息～", "mention": ["u-1"]}]
    [private] = await fake_gateway.wait_for(1)
    assert private["to"] == {"user_id": "u-1"}
    assert "积分" in private["text"] and private["id"].startswith("siyu-")
    order = await app.gateway.say("u-1", "@思语 我的订单到哪了", name="小王")
    assert [r["text"] for r in order] == ["已私信您，请查看私聊消息～"]
    await fake_gateway.wait_for(2)
    assert "订单号" in fake_gateway.private("u-1")[1]["text"]
    assert fake_gateway.posts() == []  # nothing personal was posted into the group
    pushed = await settled(lambda: rows(app.url, Message, Message.direction == "out", Message.channel == "group"),
                           lambda found: all(m.delivery != "pending" for m in found))
    assert [m.delivery for m in pushed] == ["push", "push"]


async def test_a_wave_of_joins_is_welcomed_once_mentioning_every_newcomer(group_app, fake_gateway):
    app = await group_app(welcome_gather_seconds=1.0)
    newcomers = [f"u-{n}" for n in range(1, 6)]
    for member in newcomers[:3]:
        assert await app.gateway.join(member) == {"replies": []}
    assert await app.gateway.join(*newcomers[3:]) == {"replies": []}
    [welcome] = await fake_gateway.wait_for(1)
    assert welcome["group_id"] == "g-100" and welcome["mention"] == newcomers
    assert welcome["text"] == "欢迎新朋友加入门店会员群！有任何问题 @我 就好～"
    # A join after the welcome went out starts the next one.
    await app.gateway.join("u-6")
    await fake_gateway.wait_for(2)
    assert [post["mention"] for post in fake_gateway.posts()] == [newcomers, ["u-6"]]
    welcomes = await settled(lambda: rows(app.url, GroupEntry, GroupEntry.kind == "welcome"),
                             lambda found: all(w.delivery == "sent" for w in found))
    assert [(w.delivery, w.members) for w in welcomes] == [("sent", newcomers), ("sent", ["u-6"])]
    [group] = await rows(app.url, ChatGroup)
    assert group.member_count == 6
    [day] = await rows(app.url, GroupDay, order=GroupDay.day)
    assert (day.joins, day.members) == (6, 6)


async def test_a_retried_event_is_processed_once_and_gets_the_same_answer(group_app, fake_gateway):
    app = await group_app()
    first = await app.gateway.say("u-1", "@思语 几点开门", name="小王", event_id="gm-retry")
    again = await app.gateway.say("u-1", "@思语 几点开门", name="小王", event_id="gm-retry")
    assert first == again and first[0]["text"] == HOURS_REPLY
    personal = await app.gateway.say("u-1", "@思语 查积分", name="小王", event_id="gm-points")
    assert await app.gateway.say("u-1", "@思语 查积分", name="小王", event_id="gm-points") == personal
    await fake_gateway.wait_for(1)
    join = membership("join", ["u-2"], event_id="gj-retry")
    for _ in range(2):
        status, body = await app.gateway.send(join)
        assert (status, body) == (200, {"replies": []})
    silent = message("u-3", "随便聊聊", event_id="gm-silent")
    for _ in range(2):
        assert await app.gateway.send(silent) == (200, {"replies": []})

    assert len(await rows(app.url, GroupEntry, GroupEntry.direction == "in")) == 4
    assert len(await rows(app.url, Message, Message.direction == "in")) == 2
    [day] = await rows(app.url, GroupDay, order=GroupDay.day)
    assert (day.messages, day.joins, day.answers) == (3, 1, 2)
    await fake_gateway.wait_for(2)  # the welcome of u-2
    assert len(fake_gateway.private("u-1")) == 1  # the private answer went once


async def test_bad_signatures_and_stale_timestamps_are_refused_and_nothing_is_stored(group_app):
    app = await group_app()
    event = message("u-1", "@思语 几点开门")
    assert (await app.gateway.send(event, secret="another-secret-entirely"))[0] == 401
    assert (await app.gateway.send(event, timestamp=int(time.time()) - 301))[0] == 401
    assert (await app.gateway.send(event, timestamp=int(time.time()) + 301))[0] == 401
    status, body = await app.gateway.send(event, headers={"X-Siyu-Signature": "0" * 64})
    assert status == 401 and body["error"] == "bad signature"
    status, _ = await app.gateway.send(event, headers={"X-Siyu-Timestamp": "yesterday"})
    assert status == 401
    response = await app.client.post("/group/hook", json=event)  # no headers at all
    assert response.status == 401
    assert await rows(app.url, GroupEntry) == [] and await rows(app.url, Customer) == []


async def test_malformed_oversized_and_wrong_events_are_refused_and_nothing_is_stored(group_app):
    app = await group_app(max_body_bytes=4096)
    for raw, status in [(b"{not json", 400), (b"[1, 2]", 400), (b"\xff\xfe", 400), (b"[" * 3000 + b"]" * 3000, 413),
                        (b'{"id": "x", "type": "message"}', 400), ("[" * 2000 + "]" * 2000, 400),
                        (b'{"id": "x", "type": "message", "text": "\\ud800"}', 400), (b'{"id": NaN}', 400)]:
        body = raw.encode() if isinstance(raw, str) else raw
        got, answer = await app.gateway.send(raw=body)
        assert got == status, (raw[:20], answer)
    oversized = message("u-1", "长" * 3000)
    assert (await app.gateway.send(oversized))[0] == 413
    for wrong in [{**message("u-1", "hi"), "type": "recall"}, {**message("u-1", "hi"), "mentioned": "yes"},
                  {**message("u-1", "hi"), "sender": {"name": "no id"}}, {**message("u-1", "hi"), "sent_at": "soon"},
                  {**membership("join", []), "members": []}, {**message("u-1", "hi"), "group": "g-100"},
                  message("u-1", "a\x00b"), message("u\x00-1", "hi"), {**message("u-1", "hi"), "id": 10**30}]:
        status, body = await app.gateway.send(wrong)
        assert status == 400 and body["error"], wrong
    assert await rows(app.url, GroupEntry) == [] and await rows(app.url, Customer) == []


async def test_members_are_customers_of_the_group_channel_and_joining_is_a_contact(group_app):
    app = await group_app()
    await app.gateway.join("u-1")
    await app.gateway.say("u-2", "大家好", name="小张")  # seen speaking, never seen joining
    joined = await customer_row(app.url, "u-1")
    assert (joined.channel, joined.stage, joined.source) == ("group", "contact", "group:g-100")
    speaker = await customer_row(app.url, "u-2")
    assert (speaker.nickname, speaker.source) == ("小张", "group:g-100")
    memberships = await rows(app.url, GroupMembership)
    assert [(m.member_id, m.state) for m in memberships] == [("u-1", "joined"), ("u-2", "joined")]
    await app.gateway.leave("u-1")
    [left, _] = await rows(app.url, GroupMembership)
    assert left.state == "left" and left.left_at is not None
    [day] = await rows(app.url, GroupDay, order=GroupDay.day)
    assert (day.joins, day.leaves, day.members) == (1, 1, 1)


async def test_posts_that_the_gateway_refuses_are_tried_again(group_app, fake_gateway):
    app = await group_app()
    fake_gateway.statuses = [503]
    await app.gateway.say("u-1", "@思语 查积分", name="小王")
    [private] = await fake_gateway.wait_for(1, timeout=15)
    assert private["to"] == {"user_id": "u-1"}
    [answer] = await settled(lambda: rows(app.url, Message, Message.direction == "out"),
                             lambda found: found[0].delivery != "pending")
    assert answer.delivery == "push"
