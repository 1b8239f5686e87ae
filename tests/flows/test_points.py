"""The points ledger: earn with expiry, spend oldest first, adjust, expire, summary; time injected."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from flows import points
from flows.lifecycle_settings import PointsSettings
from storage.models import Customer, PointsEntry
from tests.support.lifecycle import NOW, add_customers, database

SETTINGS = PointsSettings(validity_days=365, earn_per_yuan=1)


async def _ledger(sessions, customer_id):
    async with sessions() as session:
        return list((await session.execute(select(PointsEntry).where(PointsEntry.customer_id == customer_id)
                                           .order_by(PointsEntry.id))).scalars())


async def _customer(sessions, customer_id):
    async with sessions() as session:
        return await session.get(Customer, customer_id)


async def test_earn_spend_oldest_first_and_summary(backend_url):
    async with database(backend_url) as db:
        [cid] = await add_customers(db.sessions, [{"external_id": "p-1"}])
        async with db.sessions() as session, session.begin():
            customer = await session.get(Customer, cid)
            points.earn(session, customer, 100, "订单 A1", NOW - timedelta(days=350), SETTINGS)  # expires in 15 d
            points.earn(session, customer, 50, "签到", NOW - timedelta(days=10), SETTINGS)
            await points.spend(session, customer, 120, "兑换优惠券", NOW)
        ledger = await _ledger(db.sessions, cid)
        assert [(e.kind, e.delta, e.remaining) for e in ledger] == [("earn", 100, 0), ("earn", 50, 30),
                                                                    ("spend", -120, 0)]
        assert ledger[0].expires_at == NOW + timedelta(days=15)
        assert (await _customer(db.sessions, cid)).points_balance == 30

        async with db.sessions() as session, session.begin():
            customer = await session.get(Customer, cid)
            with pytest.raises(points.InsufficientPoints):
                await points.spend(session, customer, 31, "兑换", NOW)
            await points.adjust(session, customer, 20, "客服补偿", NOW, SETTINGS)
            await points.adjust(session, customer, -5, "调整", NOW, SETTINGS)
        async with db.sessions() as session:
            summary = await points.points_summary(session, cid, NOW + timedelta(days=340),
                                                  expiring_within_days=20)
        assert summary.balance == 45
        assert [(c.kind, c.delta) for c in summary.recent][:2] == [("adjust", -5), ("adjust", 20)]
        # The 30 left of the 50 earned on NOW-10d expire at NOW+355d, within 20 days of NOW+340d (the +20 expires later).
        assert summary.expiring_soon == 25  # the -5 adjustment took the oldest first
        assert summary.expiring_on == (NOW + timedelta(days=355) + timedelta(hours=8)).date()


async def test_expire_points_writes_expire_rows_and_lowers_balances(backend_url):
    async with database(backend_url) as db:
        ids = await add_customers(db.sessions, [{"external_id": f"e-{i}"} for i in range(30)])
        async with db.sessions() as session, session.begin():
            for i, cid in enumerate(ids):
                customer = await session.get(Customer, cid)
                points.earn(session, customer, 10, "旧积分", NOW - timedelta(days=400), SETTINGS)  # expired
                points.earn(session, customer, 7, "新积分", NOW - timedelta(days=1), SETTINGS)
                if i % 2:
                    await points.spend(session, customer, 4, "兑换", NOW - timedelta(days=500))
        db.statements.clear()
        totals = await points.expire_points(db.sessions, NOW, batch_size=25)
        assert totals["entries"] == 30
        assert totals["points"] == 15 * 10 + 15 * 6
        assert len(db.statements) < 20  # batches, not one query per customer
        again = await points.expire_points(db.sessions, NOW)
        assert again["entries"] == 0
        first, second = await _customer(db.sessions, ids[0]), await _customer(db.sessions, ids[1])
        assert (first.points_balance, second.points_balance) == (7, 7)
        ledger = await _ledger(db.sessions, ids[1])
        assert [(e.kind, e.delta) for e in ledger] == [("earn", 10), ("earn", 7), ("spend", -4), ("expire", -6)]
        assert ledger[-1].reason == points.EXPIRED_REASON and ledger[-1].occurred_at == NOW
        async with db.sessions() as session:
            summary = await points.points_summary(session, ids[1], NOW)
        assert summary.expiring_soon == 0 and summary.expiring_on is None


def test_points_for_amount_rounds_down():
    assert points.points_for_amount(Decimal("199.99"), SETTINGS) == 199
    assert points.points_for_amount(Decimal(10),
                                    PointsSettings(earn_per_yuan=0)) == 0
