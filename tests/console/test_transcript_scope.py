"""What a chat's transcript shows depends on who looks: staff see the conversations they may see
(the one in front of them, and the customer's earlier ones they handled themselves), operators
and admins the customer's whole history. A new queued chat once showed any staff member the
customer's last 200 messages, other staff's conversations included."""

from __future__ import annotations

from datetime import UTC, datetime

from storage.models import Conversation
from tests.support.db import rows

ESCALATED = "已为您转接人工客服，请稍候，客服会在这里直接回复您。"
OPEN = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 on a Wednesday in Shanghai


class Clock:
    def now(self) -> datetime:
        return OPEN


async def escalate(app, openid: str = "o-alice") -> int:
    reply = await app.server.say(openid, "转人工")
    assert reply is not None and reply["Content"] == ESCALATED
    return (await rows(app.url, Conversation, Conversation.state == "queued"))[-1].id


async def transcript(person, conversation_id: int) -> list[str]:
    status, chat = await person.get(f"/console/api/conversations/{conversation_id}")
    assert status == 200, chat
    return [m["text"] for m in chat["messages"]]


async def test_staff_see_only_the_conversations_they_may_see_in_a_new_queued_chat(console):
    app = await console(clock=Clock())
    lin, li = await app.staff("lin"), await app.staff("li")
    admin = await app.staff("boss", "admin")
    first = await escalate(app)
    assert (await lin.post(f"/console/api/conversations/{first}/claim"))[0] == 200
    assert (await lin.post(f"/console/api/conversations/{first}/reply", {"text": "您的订单号 A1001 已退款"}))[0] == 200
    assert (await lin.post(f"/console/api/conversations/{first}/close"))[0] == 200

    second = await escalate(app)  # the customer comes back: a new conversation, queued
    assert second != first
    seen_by_li = await transcript(li, second)
    assert "您的订单号 A1001 已退款" not in seen_by_li
    assert seen_by_li == ["转人工", ESCALATED]
    # The one who handled the earlier conversation still sees it; an admin sees everything.
    assert "您的订单号 A1001 已退款" in await transcript(lin, second)
    assert "您的订单号 A1001 已退款" in await transcript(admin, second)
    assert (await li.get(f"/console/api/conversations/{first}"))[0] == 403
