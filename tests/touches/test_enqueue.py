"""enqueue_touch / cancel_touches: the signature flows call, validation and idempotency."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from storage.models import Touch
from storage.touches import TouchError, cancel_touches, enqueue_touch
from tests.touches.conftest import T0, add_customer

TEXT = {"type": "text", "text": "您好，您的订单已发货。"}


async def test_enqueue_stores_a_pending_touch_and_ignores_a_repeated_key(sessions) -> None:
    customer_id = await add_customer(sessions)
    async with sessions() as session, session.begin():
        touch = await enqueue_touch(session, customer_id=customer_id, kind="service", body=TEXT,
                                    due_at=T0, idempotency_key="order:A1:shipped", priority=5,
                                    template={"template_id": "TPL", "data": {"thing1": "已发货"}})
        assert touch is not None and touch.id and touch.status == "pending"
    async with sessions() as session, session.begin():
        again = await enqueue_touch(session, customer_id=customer_id, kind="service", body=TEXT,
                                    due_at=T0, idempotency_key="order:A1:shipped")
        assert again is None
    async with sessions() as session:
        stored = (await session.execute(select(Touch))).scalars().all()
    assert [(t.kind, t.priority, t.due_at, t.attempts) for t in stored] == [("service", 5, T0, 0)]


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "promo"}, "unknown touch kind"),
    ({"body": {"type": "text", "text": " "}}, "non-empty"),
    ({"body": {"type": "video"}}, "unknown touch body type"),
    ({"body": {"type": "news", "articles": []}}, "exactly one article"),
    ({"body": {"type": "image"}}, "media_id"),
    ({"template": {"template_id": "T", "data": {"thing1": "一" * 21}}}, "longer than 20"),
    ({"template": {"template_id": "T", "data": {"thing1": "第一行\n第二行"}}}, "line break"),
    ({"template": {"template_id": "T", "data": {"first": "您好"}}}, "no longer exists"),
    ({"kind": "marketing", "template": {"template_id": "T", "data": {"thing1": "优惠"}}}, "forbids marketing"),
    ({"due_at": T0.replace(tzinfo=None)}, "timezone-aware"),
])
async def test_enqueue_refuses_what_wechat_would_refuse(sessions, kwargs, message) -> None:
    customer_id = await add_customer(sessions)
    arguments = {"customer_id": customer_id, "kind": "service", "body": TEXT, "due_at": T0,
                 "idempotency_key": "k", **kwargs}
    async with sessions() as session, session.begin():
        with pytest.raises(TouchError, match=message):
            await enqueue_touch(session, **arguments)


async def test_cancel_marks_only_matching_pending_touches_skipped(sessions) -> None:
    customer_id = await add_customer(sessions)
    other_id = await add_customer(sessions, "o-bob")
    async with sessions() as session, session.begin():
        for key, kind, run, who in [("a", "marketing", 1, customer_id), ("b", "service", 1, customer_id),
                                    ("c", "marketing", 2, customer_id), ("d", "marketing", 1, other_id)]:
            await enqueue_touch(session, customer_id=who, kind=kind, body=TEXT, flow_run_id=run,
                                due_at=T0 + timedelta(days=1), idempotency_key=key)
    async with sessions() as session, session.begin():
        count = await cancel_touches(session, customer_id=customer_id, flow_run_id=1,
                                     kinds=["marketing"], reason="order_paid")
    assert count == 1
    async with sessions() as session:
        stored = {t.idempotency_key: (t.status, t.reason)
                  for t in (await session.execute(select(Touch))).scalars()}
    assert stored == {"a": ("skipped", "order_paid"), "b": ("pending", None),
                      "c": ("pending", None), "d": ("pending", None)}


async def test_bulk_enqueue_validates_and_ignores_existing_keys(sessions) -> None:
    from storage.touches import enqueue_touches

    customer_id = await add_customer(sessions)
    items = [{"customer_id": customer_id, "kind": "marketing", "body": TEXT, "due_at": T0,
              "idempotency_key": f"b{n}"} for n in range(3)]
    async with sessions() as session, session.begin():
        assert await enqueue_touches(session, items[:2], now=T0) == 2
    async with sessions() as session, session.begin():
        assert await enqueue_touches(session, items, now=T0) == 1
    async with sessions() as session, session.begin():
        with pytest.raises(TouchError):
            await enqueue_touches(session, [{**items[0], "kind": "promo"}])
    async with sessions() as session, session.begin():
        with pytest.raises(TouchError, match="idempotency_key"):
            await enqueue_touches(session, [{**items[0], "idempotency_key": ""}])


async def test_bulk_enqueue_stores_every_field(sessions) -> None:
    from storage.touches import enqueue_touches

    customer_id = await add_customer(sessions)
    template = {"template_id": "TPL", "data": {"thing1": "订单已发货"}, "url": "https://example.com/o/1"}
    items = [
        {"customer_id": customer_id, "kind": "service", "body": TEXT, "template": template,
         "due_at": T0 + timedelta(minutes=5), "idempotency_key": "full", "priority": 7, "flow_run_id": 42},
        {"customer_id": customer_id, "kind": "marketing", "body": {"type": "image", "media_id": "M1"},
         "due_at": T0, "idempotency_key": "bare", "defer_when_capped": True},
    ]
    async with sessions() as session, session.begin():
        assert await enqueue_touches(session, items, now=T0) == 2
    async with sessions() as session:
        stored = {t.idempotency_key: t for t in (await session.execute(select(Touch))).scalars()}
    full, bare = stored["full"], stored["bare"]
    assert (full.kind, full.body, full.template, full.due_at, full.priority, full.flow_run_id) == (
        "service", TEXT, template, T0 + timedelta(minutes=5), 7, 42)
    assert (full.status, full.attempts, full.created_at, full.defer_when_capped, full.lease_until) == (
        "pending", 0, T0, False, None)
    assert (bare.kind, bare.body, bare.template, bare.due_at, bare.priority, bare.flow_run_id) == (
        "marketing", {"type": "image", "media_id": "M1"}, None, T0, 0, None)
    assert bare.defer_when_capped is True


async def test_bulk_enqueue_keeps_the_first_of_a_key_repeated_within_one_call(sessions) -> None:
    from storage.touches import enqueue_touches

    customer_id = await add_customer(sessions)
    first = {"customer_id": customer_id, "kind": "service", "body": TEXT, "due_at": T0, "idempotency_key": "same"}
    again = {**first, "body": {"type": "text", "text": "重复"}}
    other = {**first, "idempotency_key": "other"}
    async with sessions() as session, session.begin():
        assert await enqueue_touches(session, [first, again, other], now=T0) == 2
    async with sessions() as session:
        stored = {t.idempotency_key: t.body for t in (await session.execute(select(Touch))).scalars()}
    assert stored == {"same": TEXT, "other": TEXT}


async def test_bulk_enqueue_refuses_a_bad_touch_in_a_later_chunk_and_keeps_the_session_usable(
        sessions, monkeypatch) -> None:
    import storage.touches
    from storage.touches import enqueue_touches

    monkeypatch.setattr(storage.touches, "PG_CHUNK", 2)
    customer_id = await add_customer(sessions)
    items = [{"customer_id": customer_id, "kind": "service", "body": TEXT, "due_at": T0,
              "idempotency_key": f"c{n}"} for n in range(5)]
    items[3] = {**items[3], "body": {"type": "video"}}
    async with sessions() as session:
        with pytest.raises(TouchError, match="unknown touch body type"):
            async with session.begin():
                await enqueue_touches(session, items, now=T0)
        async with session.begin():
            assert await enqueue_touches(session, items[:3], now=T0) == 3
