"""The periodic lifecycle sweep: set-based moves to at_risk / churned, on every backend."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from sqlalchemy import insert, select

from flows import lifecycle
from flows.lifecycle import acquire_sweep_lock, lifecycle_sweep, release_sweep_lock
from flows.lifecycle_settings import LifecycleSettings
from flows.reactions import NoReactions
from storage.lifecycle_models import SweepLock
from storage.models import Customer, StageChange, Touch
from tests.support.db import rows
from tests.support.lifecycle import NOW, RecordingReactions, add_customers, database

SETTINGS = LifecycleSettings(churn_inactive_days=180, at_risk_unanswered_touches=3, sweep_batch_size=2000)
DAY = timedelta(days=1)


def seed() -> tuple[list[dict], dict[str, tuple[str, str]]]:
    """2,000 customers in groups; the stage each group should end in."""
    groups = {
        # name: (count, columns, expected stage)
        "overdue": (500, {"stage": "purchase", "created_at": NOW - 300 * DAY, "last_inbound_at": NOW - 5 * DAY,
                          "last_order_at": NOW - 100 * DAY, "purchase_overdue_at": NOW - 10 * DAY}, "at_risk"),
        "inactive": (500, {"stage": "interest", "created_at": NOW - 400 * DAY,
                           "last_inbound_at": NOW - 200 * DAY}, "churned"),
        "unsubscribed": (300, {"stage": "loyalty", "subscribed": False, "last_inbound_at": NOW - DAY}, "churned"),
        "fine": (400, {"stage": "use", "created_at": NOW - 300 * DAY, "last_inbound_at": NOW - 200 * DAY,
                       "last_active_at": NOW - 3 * DAY, "last_order_at": NOW - 20 * DAY,
                       "purchase_overdue_at": NOW + 10 * DAY}, "use"),
        "new": (190, {"stage": "contact", "created_at": NOW - 10 * DAY}, "contact"),
        "ignoring": (100, {"stage": "use", "last_inbound_at": NOW - 20 * DAY}, "at_risk"),
        "gone": (10, {"stage": "churned", "created_at": NOW - 400 * DAY}, "churned"),
    }
    customers, expected = [], {}
    for name, (count, columns, stage) in groups.items():
        for i in range(count):
            external_id = f"{name}-{i}"
            customers.append({"external_id": external_id, **columns})
            expected[external_id] = (columns["stage"], stage)
    return customers, expected


async def test_sweep_moves_2000_customers_with_a_handful_of_statements(backend_url):
    customers, expected = seed()
    reactions = RecordingReactions()
    async with database(backend_url) as db:
        ids = await add_customers(db.sessions, customers)
        ignoring = [cid for cid, row in zip(ids, customers) if row["external_id"].startswith("ignoring")]
        async with db.sessions() as session, session.begin():
            await session.execute(insert(Touch), [
                {"customer_id": cid, "kind": "marketing", "body": {"text": "新品上市"}, "template": None,
                 "priority": 0, "defer_when_capped": False, "idempotency_key": f"t-{cid}-{n}",
                 "status": "sent", "attempts": 1, "due_at": NOW - (10 - n) * DAY, "created_at": NOW - 15 * DAY,
                 "sent_at": NOW - (10 - n) * DAY}
                for cid in ignoring for n in range(3)])
        db.statements.clear()
        counts = await lifecycle_sweep(db.sessions, SETTINGS, NOW, reactions)
        statements = len(db.statements)
        again = await lifecycle_sweep(db.sessions, SETTINGS, NOW + timedelta(hours=1), RecordingReactions())

    assert counts["at_risk_overdue"] == 500 and counts["at_risk_unanswered"] == 100
    assert counts["churned_inactive"] == 500 and counts["churned_unsubscribed"] == 300
    assert (counts["at_risk"], counts["churned"]) == (600, 800)
    assert statements < 45, statements  # a few per rule and batch, never one per customer
    assert again["at_risk"] == 0 and again["churned"] == 0

    stages = {c.external_id: c.stage for c in await rows(backend_url, Customer)}
    assert stages == {external_id: stage for external_id, (_, stage) in expected.items()}
    changes = await rows(backend_url, StageChange)
    assert len(changes) == 1400
    assert all(c.occurred_at == NOW for c in changes)
    by_id = dict(zip(ids, customers))
    assert Counter((c.from_stage, c.to_stage, c.reason) for c in changes) == Counter({
        ("purchase", "at_risk", "no purchase past the usual interval"): 500,
        ("use", "at_risk", "3 touches unanswered"): 100,
        ("interest", "churned", "inactive for 180 days"): 500,
        ("loyalty", "churned", "unsubscribed"): 300,
    })
    assert all(by_id[c.customer_id]["stage"] == c.from_stage for c in changes)
    assert sorted(reactions.stages) == sorted((c.customer_id, c.from_stage, c.to_stage) for c in changes)


async def test_one_sweep_at_a_time(backend_url):
    async with database(backend_url) as db:
        await add_customers(db.sessions, [{"external_id": "x", "stage": "use", "subscribed": False}])
        assert await acquire_sweep_lock(db.sessions, "lifecycle", "other-process", NOW)
        assert await lifecycle_sweep(db.sessions, SETTINGS, NOW) == {"locked": 0}
        # The other process died: its lease runs out.
        counts = await lifecycle_sweep(db.sessions, SETTINGS, NOW + timedelta(minutes=16))
        assert counts["churned"] == 1
        # Released after the run: the next sweep may start at once.
        assert await acquire_sweep_lock(db.sessions, "lifecycle", "next", NOW + timedelta(minutes=17))
        await release_sweep_lock(db.sessions, "lifecycle", "next")



async def test_a_sweep_that_outlasts_its_lease_keeps_it(backend_url, monkeypatch):
    """A sweep giving way to customers can run longer than SWEEP_LEASE: it renews its lease as it
    goes, so another process looking at it sees it held past the first lease."""
    monkeypatch.setattr(lifecycle, "PROGRESS_LOG_SECONDS", 0)  # renew after every batch

    class Slow(NoReactions):
        async def on_stage_change(self, session, customer, from_stage, to_stage, now):
            await asyncio.sleep(0.005)  # flows reacting to each moved customer take their time

    async with database(backend_url) as db:
        await add_customers(db.sessions, [{"external_id": f"gone-{i}", "stage": "use", "subscribed": False}
                                          for i in range(60)])
        sweep = asyncio.create_task(lifecycle_sweep(db.sessions, SETTINGS, NOW, Slow()))
        held_until = []
        while not sweep.done():
            async with db.sessions() as session:
                until = (await session.execute(
                    select(SweepLock.locked_until).where(SweepLock.name == "lifecycle"))).scalar()
            if until is not None:
                held_until.append(until)
            await asyncio.sleep(0.01)
        assert (await sweep)["churned"] == 60
        assert max(held_until) > NOW + lifecycle.SWEEP_LEASE
