"""The console over HTTP: login, permissions, CSRF, the bot staying quiet, replies through WeChat."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bot.app import keys
from bot.console.sweeper import sweep_unclaimed
from storage.models import Conversation
from storage.staff_models import ConversationChange
from tests.console.support import PASSWORD, create_staff, login_csrf
from tests.support.db import messages, rows

ESCALATED = "已为您转接人工客服，请稍候，客服会在这里直接回复您。"
HOURS_REPLY = "亲，我们的门店营业时间是每天 10:00–22:00，线上客服 9:00–21:00。"
# 10:00 on a Wednesday in Shanghai: inside the example's business hours.
OPEN = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime):
        self.value = now

    def now(self) -> datetime:
        return self.value


async def escalate(console, openid: str = "o-alice") -> int:
    reply = await console.server.say(openid, "转人工")
    assert reply is not None and reply["Content"] == ESCALATED
    queued = await rows(console.url, Conversation, Conversation.state == "queued")
    return queued[-1].id


# --- login ------------------------------------------------------------------------------------

async def test_login_sets_a_secure_httponly_strict_cookie_by_default(console, sqlite_url):
    app = await console(cookie_secure=True)
    await create_staff(sqlite_url, "lin")
    form = await app.client.get("/console/login")
    page, token = await form.text(), form.cookies["siyu_console_login"].value
    # A Secure cookie is not sent back over plain http: hand it over as a browser on https would.
    response = await app.client.post("/console/login", allow_redirects=False,
                                     headers={"Cookie": f"siyu_console_login={token}"},
                                     data={"name": "lin", "password": PASSWORD, "csrf": login_csrf(page)})
    assert response.status == 303
    cookie = response.headers.getall("Set-Cookie")
    session = next(c for c in cookie if c.startswith("siyu_console="))
    assert "HttpOnly" in session and "Secure" in session and "SameSite=Strict" in session
    assert "Path=/console/" in session


async def test_login_without_the_form_token_is_refused(console):
    app = await console()
    await create_staff(app.url, "lin")
    response = await app.client.post("/console/login", data={"name": "lin", "password": PASSWORD, "csrf": "x"},
                                     allow_redirects=False)
    assert response.status == 403


async def test_passwords_are_stored_as_argon2_hashes(console):
    from storage.staff_models import StaffAccount

    app = await console()
    await create_staff(app.url, "lin")
    (account,) = await rows(app.url, StaffAccount)
    assert account.password_hash.startswith("$argon2id$") and PASSWORD not in account.password_hash


async def test_logout_ends_the_session(console):
    app = await console()
    lin = await app.staff("lin")
    assert (await lin.post("/console/logout"))[0] == 200
    assert (await lin.get("/console/api/queue"))[0] == 401


# --- permissions and CSRF ---------------------------------------------------------------------

GETS = ["/console/api/me", "/console/api/queue", "/console/api/canned", "/console/api/conversations",
        "/console/api/conversations/1", "/console/api/staff"]
POSTS = ["/console/logout", "/console/api/conversations/1/claim", "/console/api/conversations/1/reply",
         "/console/api/conversations/1/hand-back", "/console/api/conversations/1/close"]


async def test_every_console_route_refuses_anonymous_access(console):
    app = await console()
    for path in GETS + ["/console/api/events"]:
        response = await app.client.get(path)
        assert response.status == 401, path
    for path in POSTS:
        response = await app.client.post(path, json={})
        assert response.status == 401, path
    for page in ["/console/", "/console/console.js"]:
        response = await app.client.get(page, allow_redirects=False)
        assert response.status == 302 and response.headers["Location"] == "/console/login", page


async def test_wrong_roles_are_refused(console):
    app = await console()
    staff = await app.staff("lin", "staff")
    operator = await app.staff("wang", "operator")
    admin = await app.staff("zhao", "admin")
    assert (await staff.get("/console/api/conversations"))[0] == 403
    assert (await staff.get("/console/api/staff"))[0] == 403
    assert (await operator.get("/console/api/conversations"))[0] == 200
    assert (await operator.get("/console/api/staff"))[0] == 403
    status, data = await admin.get("/console/api/staff")
    assert status == 200 and {s["name"] for s in data["staff"]} == {"lin", "wang", "zhao"}


async def test_changes_without_the_csrf_token_are_refused(console):
    app = await console(clock=Clock(OPEN))
    conversation_id = await escalate(app)
    lin = await app.staff("lin")
    for path in POSTS:
        assert (await lin.post(path.replace("/1/", f"/{conversation_id}/"), csrf=""))[0] == 403, path
        assert (await lin.post(path.replace("/1/", f"/{conversation_id}/"), csrf="forged"))[0] == 403, path
    (conversation,) = await rows(app.url, Conversation)
    assert conversation.state == "queued"


async def test_staff_see_the_queue_and_their_own_chats_operators_see_all(console):
    app = await console(clock=Clock(OPEN))
    first = await escalate(app, "o-alice")
    second = await escalate(app, "o-bob")
    lin, li = await app.staff("lin"), await app.staff("li")
    operator = await app.staff("wang", "operator")
    assert (await lin.post(f"/console/api/conversations/{first}/claim"))[0] == 200
    assert [c["id"] for c in (await li.queue())["queued"]] == [second]
    assert (await li.queue())["mine"] == [] and (await li.queue())["others"] == []
    assert (await li.get(f"/console/api/conversations/{first}"))[0] == 403
    assert (await li.post(f"/console/api/conversations/{first}/reply", {"text": "你好"}))[0] == 409
    assert (await li.post(f"/console/api/conversations/{first}/hand-back"))[0] == 403
    assert [c["id"] for c in (await lin.queue())["mine"]] == [first]
    assert [c["assigned_staff"] for c in (await operator.queue())["others"]] == ["lin"]
    assert (await operator.get(f"/console/api/conversations/{first}"))[0] == 200


# --- escalation, claiming, the bot staying quiet ----------------------------------------------

async def test_claiming_is_atomic_two_staff_cannot_both_get_a_chat(console):
    app = await console(clock=Clock(OPEN))
    conversation_id = await escalate(app)
    people = [await app.staff(f"s{i}") for i in range(4)]
    results = await asyncio.gather(*(p.post(f"/console/api/conversations/{conversation_id}/claim")
                                     for p in people))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409, 409, 409]
    assert any("已被其他客服接入" in body.get("error", "") for _, body in results)
    changes = await rows(app.url, ConversationChange, ConversationChange.to_state == "staff")
    assert len(changes) == 1


async def test_while_staff_hold_a_chat_the_bot_is_silent_and_replies_go_through_wechat(console, fake_api):
    clock = Clock(OPEN)
    app = await console(clock=clock)
    conversation_id = await escalate(app)
    assert await app.server.say("o-alice", "几点开门") is None  # queued: stored, not answered
    lin = await app.staff("lin")
    assert (await lin.post(f"/console/api/conversations/{conversation_id}/claim"))[0] == 200
    assert await app.server.say("o-alice", "你们几点开门？") is None
    clock.value = OPEN + timedelta(seconds=40)
    status, body = await lin.post(f"/console/api/conversations/{conversation_id}/reply", {"text": "您好，10 点开门"})
    assert status == 200 and body["delivery"] == "push"
    assert fake_api.sent[-1] == {"touser": "o-alice", "msgtype": "text", "text": {"content": "您好，10 点开门"}}
    status, chat = await lin.get(f"/console/api/conversations/{conversation_id}")
    assert [m["text"] for m in chat["messages"]][-3:] == ["几点开门", "你们几点开门？", "您好，10 点开门"]
    assert chat["conversation"]["first_response_seconds"] == 40
    clock.value = OPEN + timedelta(seconds=100)
    assert (await lin.post(f"/console/api/conversations/{conversation_id}/hand-back"))[0] == 200
    reply = await app.server.say("o-alice", "你们几点开门？")
    assert reply is not None and reply["Content"] == HOURS_REPLY
    (conversation,) = await rows(app.url, Conversation)
    assert conversation.state == "bot" and conversation.handling_seconds == 100
    assert conversation.escalation_reason == "customer_request"
    changes = await rows(app.url, ConversationChange)
    assert [(c.from_state, c.to_state, c.actor) for c in changes] == [
        ("bot", "queued", "bot"), ("queued", "staff", f"staff:{lin.id}"), ("staff", "bot", f"staff:{lin.id}")]


async def test_a_delivery_error_is_shown_to_staff(console, fake_api):
    app = await console(clock=Clock(OPEN))
    conversation_id = await escalate(app)
    lin = await app.staff("lin")
    await lin.post(f"/console/api/conversations/{conversation_id}/claim")
    fake_api.send_errors.append(45015)
    status, body = await lin.post(f"/console/api/conversations/{conversation_id}/reply", {"text": "在吗"})
    assert status == 502 and body["delivery"] == "failed" and "45015" in body["error"]
    stored = await messages(app.url, "o-alice")
    assert stored[-1].delivery == "failed" and "45015" in stored[-1].payload["error"]


async def test_a_staff_reply_beyond_the_window_quota_is_not_sent_and_staff_see_why(console, fake_api):
    app = await console(clock=Clock(OPEN))
    conversation_id = await escalate(app)  # her message opened a window of 5 pushes in 48 hours
    lin = await app.staff("lin")
    await lin.post(f"/console/api/conversations/{conversation_id}/claim")
    for n in range(5):
        status, body = await lin.post(f"/console/api/conversations/{conversation_id}/reply", {"text": f"第 {n + 1} 条"})
        assert status == 200 and body["delivery"] == "push"
    status, body = await lin.post(f"/console/api/conversations/{conversation_id}/reply", {"text": "第 6 条"})
    assert status == 502 and body["delivery"] == "failed" and body["error"] == "window_quota_used"
    assert [m["text"]["content"] for m in fake_api.sent] == [f"第 {n + 1} 条" for n in range(5)]
    stored = await messages(app.url, "o-alice")
    assert (stored[-1].text, stored[-1].delivery, stored[-1].payload["error"]) == (
        "第 6 条", "failed", "window_quota_used")


async def test_not_understood_three_times_escalates_with_the_reason(console):
    app = await console(clock=Clock(OPEN))
    for text in ("阿巴阿巴", "呜啦啦啦"):
        reply = await app.server.say("o-carol", text)
        assert reply is not None and "没太明白" in reply["Content"]
    reply = await app.server.say("o-carol", "叽里咕噜")
    assert reply["Content"] == ESCALATED
    (conversation,) = await rows(app.url, Conversation)
    assert conversation.state == "queued" and conversation.escalation_reason == "not_understood"


async def test_outside_business_hours_the_customer_is_told_when_a_person_answers(console):
    # 23:30 on a Wednesday in Shanghai; people are back at 09:00.
    app = await console(clock=Clock(datetime(2026, 11, 25, 15, 30, tzinfo=UTC)))
    reply = await app.server.say("o-dan", "人工")
    assert "非工作时间" in reply["Content"] and "明天 09:00" in reply["Content"]


async def test_close_ends_the_chat_and_the_next_message_starts_a_new_conversation(console):
    from tests.support.db import events

    app = await console(clock=Clock(OPEN))
    conversation_id = await escalate(app)
    lin = await app.staff("lin")
    await lin.post(f"/console/api/conversations/{conversation_id}/claim")
    status, body = await lin.post(f"/console/api/conversations/{conversation_id}/close")
    assert status == 200 and body["state"] == "closed"
    assert len(await events(app.url, "conversation_closed")) == 1
    assert (await app.server.say("o-alice", "几点开门"))["Content"] == HOURS_REPLY
    states = [c.state for c in await rows(app.url, Conversation)]
    assert states == ["closed", "bot"]


async def test_canned_replies_are_searchable_by_code(console):
    app = await console()
    lin = await app.staff("lin")
    status, data = await lin.get("/console/api/canned?q=/ref")
    assert status == 200 and [c["code"] for c in data["canned"]] == ["refund"]
    assert len((await lin.get("/console/api/canned"))[1]["canned"]) == len(app.settings.staff.canned_replies)


# --- live queue -------------------------------------------------------------------------------

async def test_the_event_stream_announces_a_new_escalation(console):
    app = await console(clock=Clock(OPEN))
    lin = await app.staff("lin")
    response = await lin.client.get("/console/api/events")
    assert response.headers["Content-Type"].startswith("text/event-stream")
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 2)
    assert b"retry:" in first
    await escalate(app)
    announced = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 2)
    assert announced.startswith(b"event: changed")
    response.close()


# --- the unclaimed-queue wait message ---------------------------------------------------------

async def test_a_chat_nobody_claims_gets_one_wait_message(console, fake_api):
    app = await console(clock=Clock(OPEN), wait_minutes=5)
    await escalate(app)
    a = app.client.app
    args = (a[keys.SESSIONS], a[keys.OUTBOX], a[keys.SETTINGS].staff)
    assert await sweep_unclaimed(*args, OPEN + timedelta(minutes=4)) == 0
    sent = await asyncio.gather(*(sweep_unclaimed(*args, OPEN + timedelta(minutes=6)) for _ in range(3)))
    assert sum(sent) == 1
    assert await sweep_unclaimed(*args, OPEN + timedelta(minutes=30)) == 0
    assert [m["text"]["content"] for m in fake_api.sent] == [app.settings.staff.wait_text]
    out = [m for m in await messages(app.url, "o-alice") if m.intent == "handoff_wait"]
    assert len(out) == 1 and out[0].delivery == "push"
