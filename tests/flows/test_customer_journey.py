"""A customer's whole journey, over HTTP with signed WeChat XML and business events, on a hand-moved clock.

subscribe → onboarding → browsing questions make them interested → a purchase nudge waits →
order_paid cancels it → order_delivered → the survey invitation goes out as a template message
(the 48-hour window has closed) → a score of 2 hands them to staff and marks them at risk →
the win-back offer waits while staff hold the chat → staff close it → the offer goes out →
months of silence → churned → the next win-back is skipped outside the window.
"""

from __future__ import annotations

from typing import Any

from bot.app import keys
from bot.app.web import FLOWS, SENDERS, create_app
from bot.console.auth import add_staff
from bot.outbox.dispatch import dispatch_due_touches
from flows import handoff
from flows.lifecycle import lifecycle_sweep
from storage.models import Conversation, Customer, FlowRun, Touch
from tests.conftest import settings_for
from tests.support.clock import FakeClock
from tests.support.db import rows
from tests.support.wechat import WechatServer, event_xml, text_xml

OPENID = "o-journey"


class Journey:
    def __init__(self, server: WechatServer, app: Any, clock: FakeClock, url: str, fake_api: Any):
        self.server, self.app, self.clock, self.url, self.fake_api = server, app, clock, url, fake_api

    async def say(self, text: str) -> list[str]:
        status, body = await self.server.post(text_xml(OPENID, text))
        assert status == 200, body
        reply = self.server.read_reply(body)
        return [] if reply is None else [reply["Content"]]

    async def event(self, kind: str, event_id: str, data: dict[str, Any]) -> None:
        token = self.app[keys.SETTINGS].api.token
        response = await self.server.client.post(
            "/api/v1/events", headers={"Authorization": f"Bearer {token}"},
            json={"id": event_id, "type": kind, "occurred_at": self.clock.now().isoformat(),
                  "customer": {"openid": OPENID}, "data": data})
        body = await response.json()
        assert response.status == 200 and body["results"][0]["status"] == "applied", body

    async def later(self, **delta: float) -> None:
        """Time passes; the sweepers the scheduler runs do their rounds."""
        self.clock.advance(**delta)
        await self.app[FLOWS].advance_due(self.clock.now())
        await dispatch_due_touches(self.app[keys.SESSIONS], self.app[SENDERS], self.app[keys.SETTINGS].touches,
                                   self.clock, "journey")

    async def customer(self) -> Any:
        return (await rows(self.url, Customer, Customer.external_id == OPENID))[0]

    async def runs(self) -> dict[str, Any]:
        customer = await self.customer()
        return {run.flow: run for run in await rows(self.url, FlowRun, FlowRun.customer_id == customer.id)}

    async def touches(self) -> list[Any]:
        customer = await self.customer()
        return await rows(self.url, Touch, Touch.customer_id == customer.id)


async def test_a_customers_whole_journey(aiohttp_client, fake_api, example_settings, sqlite_url):
    clock = FakeClock()
    settings = settings_for(example_settings, sqlite_url, fake_api.base_url)
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={"token": "journey-token-" + "j" * 32})})
    app = create_app(settings, clock=clock)
    client = await aiohttp_client(app)
    journey = Journey(WechatServer(client=client), app, clock, sqlite_url, fake_api)

    # Follows through the store's QR code: the onboarding flow welcomes by source.
    status, body = await journey.server.post(event_xml(OPENID, "subscribe", {"EventKey": "qrscene_store_qr"}))
    assert journey.server.read_reply(body)["Content"].startswith("欢迎光临门店")
    assert (await journey.customer()).source == "store_qr"

    # Browsing questions: three product questions make the customer interested.
    for question in ("这个面霜适合什么肤质", "水光精华多少钱", "有没有敏感肌能用的"):
        [answer] = await journey.say(question)
        assert "推荐" in answer
    assert (await journey.customer()).stage == "interest"
    runs = await journey.runs()
    assert runs["purchase_nudge"].status == "waiting"

    # A day later the order comes in: the nudge is cancelled before it was ever sent.
    await journey.later(days=1)
    await journey.event("order_paid", "evt-1", {"order_id": "A1001", "amount": "199.00",
                                                "items": [{"sku": "TEE-01", "qty": 1}]})
    runs = await journey.runs()
    assert runs["purchase_nudge"].status == "exited" and runs["purchase_nudge"].end_reason == "event order_paid"
    customer = await journey.customer()
    assert (customer.stage, customer.points_balance) == ("purchase", 199)
    await journey.later(days=3)
    assert not [t for t in await journey.touches() if t.flow_run_id == runs["purchase_nudge"].id
                and t.status == "sent"]

    # Delivered; three days on, the survey invitation: the window closed, so a template message.
    await journey.event("order_delivered", "evt-2", {"order_id": "A1001"})
    assert (await journey.customer()).stage == "use"
    sent_before = len(fake_api.sent)
    await journey.later(days=3)
    invitation = fake_api.sent[sent_before:]
    assert [m.get("template_id") for m in invitation] == ["SURVEY_INVITE_TEMPLATE_ID"]
    assert invitation[0]["touser"] == OPENID

    # The customer answers 2: handed to staff, marked at risk, the win-back offer waits for staff.
    assert await journey.say("2") == ["非常抱歉这次没让您满意，已为您转接专属客服，马上为您处理。"]
    customer = await journey.customer()
    assert customer.stage == "at_risk"
    [conversation] = [c for c in await rows(sqlite_url, Conversation, Conversation.customer_id == customer.id)
                      if c.state != "closed"]
    assert (conversation.state, conversation.escalation_reason) == ("queued", "low_csat")
    sent_before = len(fake_api.sent)
    await journey.later(minutes=10)
    assert fake_api.sent[sent_before:] == []  # staff hold the chat: proactive touches wait
    assert (await journey.say("快点处理")) == []  # and the bot stays silent

    # Staff take the chat and close it; the offer then goes out inside the customer's window.
    async with app[keys.SESSIONS]() as session, session.begin():
        staff = await add_staff(session, "小王", "staff", "a-long-password-1", clock.now())
        await handoff.claim(session, conversation.id, staff.id, clock.now())
        await handoff.close(session, conversation.id, staff.id, clock.now())
    await journey.later(minutes=10)  # a touch held back for staff is looked at again after a while
    offers = [m for m in fake_api.sent[sent_before:] if m.get("msgtype") == "text"]
    assert len(offers) == 1 and "回归礼券" in offers[0]["text"]["content"]

    # Months of silence: the sweep marks the customer churned; the next win-back is outside any
    # window, and WeChat forbids marketing in template messages, so it is skipped, not sent.
    clock.advance(days=200)
    moved = await lifecycle_sweep(app[keys.SESSIONS], settings.lifecycle, clock.now(), app[FLOWS])
    assert moved["churned"] == 1
    sent_before = len(fake_api.sent)
    await journey.later(minutes=1)
    assert fake_api.sent[sent_before:] == []
    last = max(await journey.touches(), key=lambda t: t.id)
    assert last.status == "skipped" and last.kind == "marketing" and "window" in (last.reason or "")
