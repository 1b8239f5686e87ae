"""Consent and the window over HTTP: signed WeChat XML in, replies, rows and pushes out."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from bot.app import keys
from bot.app.web import SENDERS
from bot.clock import SystemClock
from bot.outbox.dispatch import dispatch_due_touches
from bot.outbox.policy import TouchPolicySettings
from storage.models import FlowRun, Touch
from storage.touches import enqueue_touch
from tests.support.db import customer_row, events, rows
from tests.support.wechat import event_xml

NO_QUIET_HOURS = TouchPolicySettings(quiet_hours_start=time(0), quiet_hours_end=time(0), marketing_per_day=10,
                                     marketing_per_week=10)
UNSUBSCRIBED = TouchPolicySettings().unsubscribe_reply
RESUBSCRIBED = TouchPolicySettings().resubscribe_reply


async def enqueue_and_dispatch(server, customer_id: int, key: str, kind: str) -> str:
    app = server.client.app
    async with app[keys.SESSIONS]() as session, session.begin():
        await enqueue_touch(session, customer_id=customer_id, kind=kind, idempotency_key=key,
                            body={"type": "text", "text": f"{kind} {key}"}, due_at=datetime.now(UTC))
    await dispatch_due_touches(app[keys.SESSIONS], app[SENDERS], NO_QUIET_HOURS, SystemClock(), "test")
    async with app[keys.SESSIONS]() as session:
        touch = (await session.execute(Touch.__table__.select().where(Touch.idempotency_key == key))).one()
    return f"{touch.status}:{touch.reason}" if touch.reason else touch.status


async def test_td_unsubscribes_from_marketing_and_a_later_message_resubscribes(wechat, sqlite_url, fake_api) -> None:
    server = await wechat()
    reply = await server.say("o-carol", "  td ")
    assert reply is not None and reply["Content"] == UNSUBSCRIBED
    customer = await customer_row(sqlite_url, "o-carol")
    assert customer.marketing_opt_out and customer.consent_changed_at is not None
    assert customer.window_quota == 5 and customer.window_used == 0

    assert await enqueue_and_dispatch(server, customer.id, "nudge-1", "marketing") == "skipped:opted_out"
    assert await enqueue_and_dispatch(server, customer.id, "order-1", "service") == "sent"
    assert [p["text"]["content"] for p in fake_api.sent] == ["service order-1"]

    reply = await server.say("o-carol", "请问你们几点开门？")  # any later message resubscribes
    assert reply is not None and reply["Content"] != RESUBSCRIBED
    assert not (await customer_row(sqlite_url, "o-carol")).marketing_opt_out
    assert await enqueue_and_dispatch(server, customer.id, "nudge-2", "marketing") == "sent"
    assert [e.data["via"] for e in await events(sqlite_url, "marketing_unsubscribed")] == ["td"]
    assert [e.data["via"] for e in await events(sqlite_url, "marketing_subscribed")] == ["message"]


async def test_tuiding_and_dingyue_reply_with_confirmations(wechat, sqlite_url) -> None:
    server = await wechat()
    assert (await server.say("o-dave", "退订"))["Content"] == UNSUBSCRIBED
    assert (await server.say("o-dave", "退订"))["Content"] == UNSUBSCRIBED  # said twice, logged once
    assert (await server.say("o-dave", "订阅"))["Content"] == RESUBSCRIBED
    assert not (await customer_row(sqlite_url, "o-dave")).marketing_opt_out
    assert len(await events(sqlite_url, "marketing_unsubscribed")) == 1
    assert [e.data["via"] for e in await events(sqlite_url, "marketing_subscribed")] == ["订阅"]
    # 退订 inside a sentence is an ordinary message, not an opt-out
    await server.say("o-dave", "怎么退订单")
    assert not (await customer_row(sqlite_url, "o-dave")).marketing_opt_out


async def test_a_follow_opens_three_messages_within_a_minute(wechat, sqlite_url, fake_api) -> None:
    server = await wechat()
    before = datetime.now(UTC)
    status, _ = await server.post(event_xml("o-erin", "subscribe", {"EventKey": "qrscene_store1"}))
    assert status == 200
    customer = await customer_row(sqlite_url, "o-erin")
    assert customer.window_quota == 3
    assert before + timedelta(seconds=59) <= customer.window_expires_at <= datetime.now(UTC) + timedelta(minutes=1)
    results = [await enqueue_and_dispatch(server, customer.id, f"welcome-{n}", "service") for n in range(4)]
    assert results == ["sent", "sent", "sent", "skipped:window_quota_used"]
    assert len(fake_api.sent) == 3
    pushed = await rows(sqlite_url, Touch, Touch.status == "sent")
    assert len(pushed) == 3


async def test_full_width_td_unsubscribes_like_td(wechat, sqlite_url) -> None:
    server = await wechat()
    assert (await server.say("o-erin", "ＴＤ"))["Content"] == UNSUBSCRIBED
    assert (await customer_row(sqlite_url, "o-erin")).marketing_opt_out


async def test_an_intent_whose_reply_says_unsubscribed_opts_the_customer_out(wechat, sqlite_url,
                                                                              example_settings) -> None:
    server = await wechat()
    status, _ = await server.post(event_xml("o-frank", "subscribe"))
    assert status == 200
    customer = await customer_row(sqlite_url, "o-frank")
    [onboarding] = await rows(sqlite_url, FlowRun, FlowRun.customer_id == customer.id)
    assert onboarding.flow == "onboarding" and onboarding.status == "waiting"

    reply = await server.say("o-frank", "别再给我发消息了")
    [intent] = [i for i in example_settings.intents if i.name == "unsubscribe"]
    assert reply is not None and reply["Content"] == intent.reply
    customer = await customer_row(sqlite_url, "o-frank")
    assert customer.marketing_opt_out and customer.consent_changed_at is not None
    assert [e.data["via"] for e in await events(sqlite_url, "marketing_unsubscribed")] == ["别再给我发消息了"]
    # The onboarding series stops (it exits on "unsubscribe"), and marketing is not sent.
    [onboarding] = await rows(sqlite_url, FlowRun, FlowRun.customer_id == customer.id)
    assert onboarding.status == "exited"
    assert await enqueue_and_dispatch(server, customer.id, "offer-1", "marketing") == "skipped:opted_out"

    # Said again while opted out: still opted out, logged once; a question afterwards resubscribes.
    assert (await server.say("o-frank", "别再给我发消息了"))["Content"] == intent.reply
    assert (await customer_row(sqlite_url, "o-frank")).marketing_opt_out
    await server.say("o-frank", "你们几点开门")
    assert not (await customer_row(sqlite_url, "o-frank")).marketing_opt_out
    assert len(await events(sqlite_url, "marketing_unsubscribed")) == 1


async def test_quxiao_dingyue_unsubscribes_like_tuiding(wechat, sqlite_url) -> None:
    server = await wechat()
    assert (await server.say("o-gina", "取消订阅"))["Content"] == UNSUBSCRIBED
    assert (await customer_row(sqlite_url, "o-gina")).marketing_opt_out
