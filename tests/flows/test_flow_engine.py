"""The flow engine: triggers, steps, answers, exits, priority, versions and restarts."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.app.understanding import build_router
from bot.config.settings import load_settings
from bot.pipeline.pipeline import Pipeline
from flows.definitions import Flow
from flows.engine import FlowEngine
from handlers.messages import EventKind, Inbound, InboundKind
from storage.db import make_engine, make_sessionmaker
from storage.models import Customer, FlowRun, SurveyResponse, Touch
from tests.support.clock import FakeClock
from tests.support.db import rows

ROOT = Path(__file__).resolve().parents[2]


class Harness:
    """The pipeline with the flow engine as its stage, on a real database, with a hand-moved clock."""

    def __init__(self, url: str, flows: list[Flow] | None = None):
        self.settings = load_settings(ROOT / "config.example.toml", environ={})
        self.clock = FakeClock()
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        self.flows = FlowEngine(self.settings.flows if flows is None else flows, self.sessions,
                                self.settings.points if hasattr(self.settings, "points") else None)
        self.pipeline = Pipeline(self.sessions, build_router(self.settings), self.clock, middlewares=[self.flows])

    async def start(self) -> Harness:
        await self.flows.save_versions(self.clock.now())
        return self

    async def say(self, user: str, text: str) -> list[str]:
        outcome = await self.pipeline.handle(Inbound(channel="wechat_mp", user_id=user, kind=InboundKind.TEXT,
                                                     received_at=self.clock.now(), text=text))
        return [reply.text for reply in outcome.replies]

    async def follow(self, user: str, scene: str | None = None) -> list[str]:
        outcome = await self.pipeline.handle(Inbound(channel="wechat_mp", user_id=user, kind=InboundKind.EVENT,
                                                     received_at=self.clock.now(), event=EventKind.SUBSCRIBE,
                                                     event_key=scene))
        return [reply.text for reply in outcome.replies]

    async def event(self, user: str, kind: str, data: dict | None = None) -> None:
        async with self.sessions() as session, session.begin():
            customer = (await session.execute(select(Customer).where(Customer.external_id == user))).scalar_one()
            await self.flows.on_event(session, customer, kind, data or {}, self.clock.now())

    async def stage(self, user: str, to: str) -> None:
        async with self.sessions() as session, session.begin():
            customer = (await session.execute(select(Customer).where(Customer.external_id == user))).scalar_one()
            before, customer.stage = customer.stage, to
            await self.flows.on_stage_change(session, customer, before, to, self.clock.now())

    async def later(self, **delta: float) -> int:
        self.clock.advance(**delta)
        return await self.flows.advance_due(self.clock.now())

    async def touches(self, user: str) -> list[Touch]:
        customer = (await rows(self.url, Customer, Customer.external_id == user))[0]
        return await rows(self.url, Touch, Touch.customer_id == customer.id)

    async def runs(self, user: str) -> list[FlowRun]:
        customer = (await rows(self.url, Customer, Customer.external_id == user))[0]
        return await rows(self.url, FlowRun, FlowRun.customer_id == customer.id)

    async def close(self) -> None:
        await self.engine.dispose()


@pytest.fixture
async def harness(sqlite_url):
    h = Harness(sqlite_url)
    h.url = sqlite_url
    await h.start()
    yield h
    await h.close()


def texts(touches: list[Touch]) -> list[str]:
    return [t.body.get("text") or t.body.get("articles", [{}])[0].get("title") for t in touches]


async def test_onboarding_welcomes_by_source_then_sends_its_series_on_time(harness):
    assert (await harness.follow("o-shop", scene="store_qr"))[0].startswith("欢迎光临门店")
    assert (await harness.follow("o-web"))[0].startswith("欢迎关注")
    assert await harness.touches("o-shop") == []
    await harness.later(hours=23)
    assert await harness.touches("o-shop") == []
    await harness.later(hours=1)
    assert texts(await harness.touches("o-shop")) == ["新人必看：会员权益一览"]
    await harness.later(days=2)
    series = await harness.touches("o-shop")
    assert len(series) == 2 and "20 元无门槛券" in series[1].body["text"]
    assert all(t.kind == "marketing" and t.status == "pending" for t in series)
    assert (await harness.runs("o-shop"))[0].status == "completed"


async def test_onboarding_runs_once_per_customer(harness):
    await harness.follow("o-1")
    await harness.later(days=5)
    again = await harness.follow("o-1")  # unfollowed and followed again: the default welcome only
    assert again == [harness.settings.replies.welcome]
    assert len(await harness.runs("o-1")) == 1


async def test_cart_nudge_is_cancelled_by_an_order(harness):
    await harness.say("o-cart", "你好")
    await harness.event("o-cart", "cart_abandoned", {"sku": "TEE-01"})
    await harness.later(hours=1)
    await harness.event("o-cart", "order_paid", {"order_id": "A1", "amount": "99.00"})
    assert await harness.later(hours=2) == 0
    [run] = [r for r in await harness.runs("o-cart") if r.flow == "purchase_nudge"]
    assert run.status == "exited" and run.end_reason == "event order_paid"
    assert await harness.touches("o-cart") == []


async def test_cart_nudge_goes_out_when_no_order_comes(harness):
    await harness.say("o-cart", "你好")
    await harness.event("o-cart", "cart_abandoned", {})
    await harness.later(hours=2)
    [touch] = await harness.touches("o-cart")
    assert "购物车" in touch.body["text"] and touch.kind == "marketing"


async def test_survey_low_score_hands_off_and_records_the_answer(harness):
    await harness.say("o-sad", "你好")
    await harness.event("o-sad", "order_delivered", {"order_id": "A1001"})
    await harness.later(days=3)
    [invite] = await harness.touches("o-sad")
    assert "订单 A1001" in invite.body["text"] and invite.kind == "service"
    assert invite.template["template_id"] == "SURVEY_INVITE_TEMPLATE_ID"
    replies = await harness.say("o-sad", "2分")
    assert replies == ["非常抱歉这次没让您满意，已为您转接专属客服，马上为您处理。"]
    answers = await rows(harness.url, SurveyResponse)
    assert [(a.question, a.score) for a in answers] == [("csat", 2)]
    customer = (await rows(harness.url, Customer, Customer.external_id == "o-sad"))[0]
    assert customer.stage == "at_risk"


async def test_survey_happy_path_asks_nps_and_comment_then_rewards(harness):
    await harness.say("o-happy", "你好")
    await harness.event("o-happy", "order_delivered", {"order_id": "A2002"})
    await harness.later(days=3)
    assert (await harness.say("o-happy", "非常满意"))[0].startswith("谢谢您的评分")
    assert (await harness.say("o-happy", "9"))[0].startswith("最后，有什么想对我们说的吗")
    [thanks] = await harness.say("o-happy", "包装很用心，发货也快")
    assert thanks == "感谢您的反馈！20 积分已到账，当前积分 20。"
    answers = {a.question: (a.score, a.text) for a in await rows(harness.url, SurveyResponse)}
    assert answers == {"csat": (5, None), "nps": (9, None), "comment": (None, "包装很用心，发货也快")}


async def test_a_non_answer_is_asked_again_then_left_to_the_bot(harness):
    await harness.say("o-q", "你好")
    await harness.event("o-q", "order_delivered", {"order_id": "A3"})
    await harness.later(days=3)
    assert await harness.say("o-q", "嗯嗯嗯我想想") == ["请回复 1 到 5 的数字，5 分表示非常满意～"]
    second = await harness.say("o-q", "几点开门")  # still not a rating: the bot answers the question
    assert "营业时间" in second[0]
    [run] = [r for r in await harness.runs("o-q") if r.flow == "after_sales_survey"]
    assert run.status == "completed"


async def test_an_unanswered_question_times_out(harness):
    await harness.say("o-quiet", "你好")
    await harness.event("o-quiet", "order_delivered", {"order_id": "A4"})
    await harness.later(days=3)
    await harness.later(days=2)
    [run] = [r for r in await harness.runs("o-quiet") if r.flow == "after_sales_survey"]
    assert run.status == "completed" and "no answer" in run.end_reason


async def test_win_back_stops_when_the_customer_replies(harness):
    await harness.say("o-gone", "你好")
    await harness.stage("o-gone", "at_risk")
    [offer] = await harness.touches("o-gone")
    assert "回归礼券" in offer.body["text"]
    await harness.say("o-gone", "谢谢")
    [run] = [r for r in await harness.runs("o-gone") if r.flow == "win_back"]
    assert run.status == "exited" and run.end_reason == "customer replied"
    assert await harness.later(days=7) == 0


async def test_higher_priority_flow_preempts_and_lower_one_waits_its_turn(harness):
    await harness.say("o-p", "你好")
    await harness.event("o-p", "cart_abandoned", {})  # purchase_nudge, priority 20
    await harness.stage("o-p", "at_risk")  # win_back, priority 40, exclusive: takes over
    runs = {r.flow: r for r in await harness.runs("o-p")}
    assert runs["purchase_nudge"].status == "exited" and "preempted" in runs["purchase_nudge"].end_reason
    assert runs["win_back"].status == "waiting"
    await harness.event("o-p", "cart_abandoned", {})  # lower priority: not started while win_back runs
    assert len([r for r in await harness.runs("o-p") if r.flow == "purchase_nudge"]) == 1


async def test_customers_finish_the_version_they_entered(harness, sqlite_url):
    await harness.follow("o-old")
    def edit(step):  # the operator rewrites the day-1 content
        return step.model_copy(update={"news": None, "text": "新版第一天内容"}) if step.news else step
    edited = [flow if flow.name != "onboarding" else flow.model_copy(update={"steps": [
        edit(step) for step in flow.steps]}) for flow in harness.settings.flows]
    restarted = Harness(sqlite_url, edited)  # a new process with the operator's edit
    restarted.url, restarted.clock = sqlite_url, harness.clock
    await restarted.start()
    try:
        await restarted.follow("o-new")
        restarted.clock.advance(days=1)
        assert await restarted.flows.advance_due(restarted.clock.now()) == 2
        assert texts(await restarted.touches("o-old")) == ["新人必看：会员权益一览"]
        assert texts(await restarted.touches("o-new")) == ["新版第一天内容"]
        versions = {r.flow: r.version for r in await restarted.runs("o-old")}
        assert versions["onboarding"] != {r.flow: r.version for r in await restarted.runs("o-new")}["onboarding"]
    finally:
        await restarted.close()


async def test_a_restart_continues_waiting_runs(harness, sqlite_url):
    await harness.follow("o-r")
    await harness.close()
    fresh = Harness(sqlite_url)
    fresh.url, fresh.clock = sqlite_url, harness.clock
    await fresh.start()
    try:
        fresh.clock.advance(days=1)
        assert await fresh.flows.advance_due(fresh.clock.now()) == 1
        assert texts(await fresh.touches("o-r")) == ["新人必看：会员权益一览"]
    finally:
        await fresh.close()
    harness.engine = make_engine(sqlite_url)  # the fixture disposes it again


async def test_reentry_every_period(harness):
    await harness.say("o-e", "你好")
    await harness.event("o-e", "cart_abandoned", {})
    await harness.later(hours=2)
    await harness.event("o-e", "cart_abandoned", {})  # within 30 days: no second nudge
    await harness.later(days=31)
    await harness.event("o-e", "cart_abandoned", {})
    await harness.later(hours=2)
    assert len(await harness.touches("o-e")) == 2


def test_an_always_flow_can_restart_and_a_loop_is_cut(sqlite_url):
    flow = Flow.model_validate({"name": "loop", "kind": "service", "reentry": "always",
                                "triggers": [{"event": "store_visit"}],
                                "steps": [{"id": "a", "type": "set_tag", "tag": "x"}, {"type": "goto", "to": "a"}]})
    assert flow.step_ids() == ["a", "step2"]


async def test_a_goto_loop_without_a_wait_ends_the_run(sqlite_url):
    loop = Flow.model_validate({"name": "loop", "kind": "service", "reentry": "always",
                                "triggers": [{"event": "store_visit"}],
                                "steps": [{"id": "a", "type": "set_tag", "tag": "x"}, {"type": "goto", "to": "a"}]})
    h = Harness(sqlite_url, [loop])
    h.url = sqlite_url
    await h.start()
    try:
        await h.say("o-l", "你好")
        await h.event("o-l", "store_visit")
        [run] = await h.runs("o-l")
        assert run.status == "exited" and "loop" in run.end_reason
    finally:
        await h.close()


async def test_a_scheduled_flow_starts_once_per_firing_for_matching_customers(sqlite_url):
    tip = Flow.model_validate({
        "name": "vip_tip", "kind": "service", "reentry": "always",
        "triggers": [{"schedule": "0 2 * * *", "when": '"vip" in tags'}],
        "steps": [{"type": "send", "text": "{nickname}，VIP 专属保养小贴士来啦"}]})
    first, second = Harness(sqlite_url, [tip]), Harness(sqlite_url, [tip])  # two processes
    first.url = second.url = sqlite_url
    second.clock = first.clock
    await first.start()
    await second.start()
    try:
        await first.say("o-vip", "你好")
        await first.say("o-plain", "你好")
        async with first.sessions() as session, session.begin():
            vip = (await session.execute(select(Customer).where(Customer.external_id == "o-vip"))).scalar_one()
            vip.tags = ["vip"]
        for engine in (first.flows, second.flows):
            assert await engine.run_schedules(first.clock.now()) == 0  # the first look only sets the mark
        first.clock.advance(days=1)
        assert await first.flows.run_schedules(first.clock.now()) == 1
        assert await second.flows.run_schedules(first.clock.now()) == 0  # that firing is taken
        assert texts(await first.touches("o-vip")) == ["亲，VIP 专属保养小贴士来啦"]
        assert await first.touches("o-plain") == []
    finally:
        await first.close()
        await second.close()


async def test_points_query_answers_from_the_ledger(harness):
    from flows.points import earn

    assert (await harness.say("o-pts", "我有多少积分"))[0].startswith("亲，您目前还没有积分")
    async with harness.sessions() as session, session.begin():
        customer = (await session.execute(select(Customer).where(Customer.external_id == "o-pts"))).scalar_one()
        earn(session, customer, 120, "下单 A1", harness.clock.now() - timedelta(days=340), harness.settings.points)
        earn(session, customer, 80, "下单 A2", harness.clock.now(), harness.settings.points)
    [answer] = await harness.say("o-pts", "帮我查下积分")
    assert answer.startswith("亲，您当前有 200 积分，其中 120 分将在 30 天内到期")
    assert "下单 A2 +80" in answer and "下单 A1 +120" in answer


async def test_customers_answering_their_surveys_together_each_answer_their_own_question(harness):
    """Answers arriving at once (one shared transaction on SQLite) reach each customer's own run,
    and a customer's run finished in the group is not offered their next message."""
    users = [f"o-many-{i}" for i in range(12)]
    for user in users:
        await harness.say(user, "你好")
        await harness.event(user, "order_delivered", {"order_id": f"B{user[-2:]}"})
    await harness.later(days=3)
    scores = {user: 1 + i % 5 for i, user in enumerate(users)}
    replies = await asyncio.gather(*(harness.say(user, f"{scores[user]}分") for user in users))
    for user, said in zip(users, replies, strict=True):
        if scores[user] <= 2:
            assert said == ["非常抱歉这次没让您满意，已为您转接专属客服，马上为您处理。"], user
        else:
            assert said[0].startswith("谢谢您的评分"), user
    answers = await rows(harness.url, SurveyResponse)
    by_customer = {(await rows(harness.url, Customer, Customer.id == a.customer_id))[0].external_id: a.score
                   for a in answers}
    assert by_customer == scores
    # The happy ones were asked the next question; answering it goes on in their own run.
    happy = [user for user in users if scores[user] > 2]
    replies = await asyncio.gather(*(harness.say(user, "9") for user in happy))
    assert all(said[0].startswith("最后，有什么想对我们说的吗") for said in replies)
