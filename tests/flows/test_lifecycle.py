"""Lifecycle moves driven by messages: engagement → interest, (un)subscribe, mark_at_risk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.app.understanding import build_router
from bot.pipeline.pipeline import Pipeline
from flows import lifecycle
from flows.lifecycle import LifecycleMiddleware
from flows.lifecycle_settings import LifecycleSettings
from handlers.messages import EventKind, Inbound, InboundKind
from storage.models import Customer, StageChange
from tests.support.db import customer_row, rows
from tests.support.lifecycle import NOW, FixedClock, RecordingReactions, add_customers, database

SETTINGS = LifecycleSettings(interest_interactions=3, interest_window_days=7)


def event(user: str, kind: EventKind, at: datetime, key: str | None = None) -> Inbound:
    return Inbound(channel="wechat_mp", user_id=user, kind=InboundKind.EVENT, received_at=at,
                   dedup_key=f"{user}:{kind}:{at.timestamp()}", event=kind, event_key=key)


async def test_menu_clicks_within_the_window_make_interest(backend_url, example_settings):
    clock, reactions = FixedClock(), RecordingReactions()
    async with database(backend_url) as db:
        pipeline = Pipeline(db.sessions, build_router(example_settings), clock,
                            middlewares=[LifecycleMiddleware(SETTINGS, reactions)])
        await pipeline.handle(event("amy", EventKind.SUBSCRIBE, clock.at, "qr-store"))
        await pipeline.handle(event("amy", EventKind.CLICK, clock.at, "MENU_NEW"))
        clock.at = NOW + timedelta(days=8)  # the first click is now outside the 7-day window
        await pipeline.handle(event("amy", EventKind.VIEW, clock.at, "https://shop.example/new"))
        await pipeline.handle(event("amy", EventKind.CLICK, clock.at, "MENU_NEW"))
        assert (await customer_row(backend_url, "amy")).stage == "contact"
        await pipeline.handle(event("amy", EventKind.CLICK, clock.at + timedelta(minutes=1), "MENU_NEW"))
        customer = await customer_row(backend_url, "amy")
        assert customer.stage == "interest" and customer.stage_changed_at == clock.at
        clock.at += timedelta(days=1)
        await pipeline.handle(event("amy", EventKind.UNSUBSCRIBE, clock.at))
        assert (await customer_row(backend_url, "amy")).stage == "churned"
        await pipeline.handle(event("amy", EventKind.SUBSCRIBE, clock.at + timedelta(hours=1)))
    changes = await rows(backend_url, StageChange)
    assert [(c.from_stage, c.to_stage) for c in changes] == [
        (None, "contact"), ("contact", "interest"), ("interest", "churned"), ("churned", "contact")]
    assert changes[1].reason == "3 engaged interactions within 7 days"
    assert [(f, t) for _, f, t in reactions.stages] == [(c.from_stage, c.to_stage) for c in changes]


async def test_engaged_intents_count_and_others_do_not(backend_url):
    async with database(backend_url) as db:
        [cid] = await add_customers(db.sessions, [{"external_id": "bob"}])
        async with db.sessions() as session, session.begin():
            customer = await session.get(Customer, cid)
            for intent in ("greeting", "thanks", None, "product_inquiry", "promotion"):
                assert not await lifecycle.evaluate_after_message(
                    session, customer, intent, NOW, SETTINGS, RecordingReactions())
            assert await lifecycle.evaluate_after_message(
                session, customer, "store_info", NOW, SETTINGS, RecordingReactions())
            assert customer.stage == "interest"


async def test_mark_at_risk_and_move_stage(backend_url):
    reactions = RecordingReactions()
    async with database(backend_url) as db:
        [cid] = await add_customers(db.sessions, [{"external_id": "cat", "stage": "use"}])
        async with db.sessions() as session, session.begin():
            customer = await session.get(Customer, cid)
            assert await lifecycle.mark_at_risk(session, customer, "CSAT 1", NOW, reactions)
            assert not await lifecycle.mark_at_risk(session, customer, "CSAT 2", NOW, reactions)
            assert not await lifecycle.move_stage(session, customer, "at_risk", "again", NOW, reactions)
    [change] = await rows(backend_url, StageChange)
    assert (change.from_stage, change.to_stage, change.reason, change.occurred_at) == ("use", "at_risk", "CSAT 1", NOW)
    assert reactions.stages == [(cid, "use", "at_risk")]


def test_purchase_overdue_uses_the_usual_interval():
    settings = LifecycleSettings(at_risk_interval_factor=2.0, at_risk_min_days=30)
    first = datetime(2026, 1, 1, tzinfo=UTC)
    one = Customer(orders_count=1, first_order_at=first, last_order_at=first)
    assert lifecycle.purchase_overdue_at(one, settings) == first + timedelta(days=30)
    # Four orders over 90 days: every 30 days; overdue after 2 × 30 = 60 days.
    regular = Customer(orders_count=4, first_order_at=first, last_order_at=first + timedelta(days=90))
    assert lifecycle.purchase_overdue_at(regular, settings) == first + timedelta(days=150)
    # Weekly buyers are still given the minimum.
    weekly = Customer(orders_count=3, first_order_at=first, last_order_at=first + timedelta(days=14))
    assert lifecycle.purchase_overdue_at(weekly, settings) == first + timedelta(days=44)
    assert lifecycle.purchase_overdue_at(Customer(orders_count=0), settings) is None
