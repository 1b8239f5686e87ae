"""POST /api/v1/events over HTTP with the real app: auth, limits, per-row results, every effect."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from bot.api.events import EVENT_REACTIONS, MAX_EVENTS
from bot.app.web import create_app
from storage.models import BusinessEvent, Customer, Order, PointsEntry, StageChange
from tests.support.db import customer_row, rows
from tests.support.lifecycle import FixedClock, RecordingReactions, add_customers, database

TOKEN = "events-test-token-of-at-least-32-characters"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def event(event_id: str, kind: str, data: dict[str, Any] | None = None, openid: str | None = "o-100",
          at: str = "2026-11-23T10:00:00+08:00", **customer: Any) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "occurred_at": at,
            "customer": {"openid": openid, "unionid": None, "phone": None, **customer}, "data": data or {}}


def paid(event_id: str, order_id: str, amount: str = "199.00", **kw: Any) -> dict[str, Any]:
    return event(event_id, "order_paid", {"order_id": order_id, "amount": amount,
                                          "items": [{"sku": "TEE-01", "qty": 1}]}, **kw)


async def start(aiohttp_client, example_settings, url, token=TOKEN, reactions=None):
    settings = example_settings.model_copy(update={
        "storage": example_settings.storage.model_copy(update={"url": url}),
        "api": example_settings.api.model_copy(update={"token": token})})
    app = create_app(settings, clock=FixedClock())
    app[EVENT_REACTIONS] = reactions or RecordingReactions()
    return await aiohttp_client(app), app[EVENT_REACTIONS]


async def post(client, body: Any, headers=AUTH):
    response = await client.post("/api/v1/events", json=body, headers=headers)
    return response.status, await response.json()


async def test_token_is_required(aiohttp_client, example_settings, sqlite_url):
    client, _ = await start(aiohttp_client, example_settings, sqlite_url)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = await client.post("/api/v1/events", json=paid("e1", "A1"), headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await rows(sqlite_url, BusinessEvent) == []
    status, _ = await post(client, paid("e1", "A1"))
    assert status == 200


async def test_an_empty_configured_token_turns_the_api_off(aiohttp_client, example_settings, sqlite_url):
    client, _ = await start(aiohttp_client, example_settings, sqlite_url, token="")
    response = await client.post("/api/v1/events", json=paid("e1", "A1"), headers={"Authorization": "Bearer "})
    assert response.status == 503 and "SIYU_API_TOKEN" in (await response.json())["error"]


async def test_the_example_configs_placeholder_token_never_opens_the_api(aiohttp_client, example_settings,
                                                                        sqlite_url):
    for token in ("change-me", "CHANGE_ME", "secret", "short-but-not-a-placeholder"):
        client, _ = await start(aiohttp_client, example_settings, sqlite_url, token=token)
        grant = event("e1", "points_changed", {"delta": 100000, "reason": "free"})
        status, body = await post(client, grant, headers={"Authorization": f"Bearer {token}"})
        assert status == 503 and "at least 32 characters" in body["error"], token
    assert await rows(sqlite_url, BusinessEvent) == []
    assert example_settings.api.token == ""  # the example keeps the API off until a token is set


async def test_bad_bodies_get_clean_4xx(aiohttp_client, example_settings, sqlite_url):
    client, _ = await start(aiohttp_client, example_settings, sqlite_url)
    response = await client.post("/api/v1/events", data=b"{not json", headers=AUTH)
    assert response.status == 400 and "not JSON" in (await response.json())["error"]
    response = await client.post("/api/v1/events", data=b"42", headers=AUTH)
    assert response.status == 400
    response = await client.post("/api/v1/events", data=b"[" + b" " * (1024 * 1024) + b"]", headers=AUTH)
    assert response.status == 413
    status, body = await post(client, [paid(f"e{i}", f"A{i}") for i in range(MAX_EVENTS + 1)])
    assert status == 413 and str(MAX_EVENTS) in body["error"]


async def test_one_bad_row_keeps_the_good_ones(aiohttp_client, example_settings, sqlite_url):
    client, _ = await start(aiohttp_client, example_settings, sqlite_url)
    status, body = await post(client, [
        paid("e1", "A1"),
        paid("e2", "A2", amount="abc"),
        event("e3", "store_visit", {"store_id": "SH-01"}),
        {"id": "e4", "type": "order_shipped", "occurred_at": "2026-11-23T10:00:00+08:00",
         "customer": {"openid": "o-100"}},
        event("e5", "order_paid", {"order_id": "A5", "amount": "10"}, at="2026-11-23T10:00:00"),
    ])
    assert status == 200
    assert [r["status"] for r in body["results"]] == ["applied", "error", "applied", "error", "error"]
    assert (body["applied"], body["error"]) == (2, 3)
    errors = [r.get("error") for r in body["results"]]
    assert errors[1].startswith("item 1: data.amount:")
    assert errors[3].startswith("item 3: type: unknown event type 'order_shipped'")
    assert errors[4].startswith("item 4: occurred_at:") and "timezone" in errors[4]
    assert [r["id"] for r in body["results"]] == ["e1", "e2", "e3", "e4", "e5"]
    assert [e.event_id for e in await rows(sqlite_url, BusinessEvent)] == ["e1", "e3"]
    assert [o.order_id for o in await rows(sqlite_url, Order)] == ["A1"]


async def test_events_are_idempotent_by_id(aiohttp_client, example_settings, backend_url):
    client, reactions = await start(aiohttp_client, example_settings, backend_url)
    await post(client, paid("e1", "A1"))
    status, body = await post(client, [paid("e1", "A1"), paid("e1", "A1")])
    assert [r["status"] for r in body["results"]] == ["duplicate", "duplicate"]
    customer = await customer_row(backend_url, "o-100")
    assert (customer.orders_count, customer.lifetime_spend, customer.points_balance) == (1, Decimal("199.00"), 199)
    assert len(await rows(backend_url, Order)) == 1
    assert len(await rows(backend_url, PointsEntry)) == 1
    assert [kind for _, kind, _ in reactions.events] == ["order_paid"]


async def test_customers_are_matched_by_openid_unionid_or_phone(aiohttp_client, example_settings, backend_url):
    async with database(backend_url) as db:
        sim, mp, kf = await add_customers(db.sessions, [
            {"channel": "simulator", "external_id": "o-shared"},
            {"channel": "wechat_mp", "external_id": "o-shared", "unionid": "u-1"},
            {"channel": "wecom_kf", "external_id": "kf-1", "phone": "13800138000"},
        ])
        [only_sim] = await add_customers(db.sessions, [{"channel": "simulator", "external_id": "amy"}])
    client, _ = await start(aiohttp_client, example_settings, backend_url)
    status, body = await post(client, [
        paid("e1", "A1", openid="o-shared"),                    # the Official Account customer wins
        paid("e2", "A2", openid=None, unionid="u-1"),
        paid("e3", "A3", openid=None, phone="13800138000"),
        paid("e4", "A4", openid="amy"),                         # never a simulator user: created
        paid("e5", "A5", openid="o-new", phone="13900139000"),   # created
        paid("e6", "A6", openid=None, phone="13700000000"),      # nobody: an error
    ])
    assert [r["status"] for r in body["results"]] == ["applied"] * 5 + ["error"]
    assert body["results"][5]["error"] == ("item 5: customer.phone: no customer has this phone; "
                                           "give an openid to create one")
    owners = {o.order_id: o.customer_id for o in await rows(backend_url, Order)}
    assert owners["A1"] == mp and owners["A2"] == mp and owners["A3"] == kf and owners["A4"] != only_sim
    created = await customer_row(backend_url, "o-new")
    assert (created.channel, created.phone, created.stage) == ("wechat_mp", "13900139000", "purchase")
    assert owners["A5"] == created.id and sim not in owners.values()
    assert {c.channel for c in await rows(backend_url, Customer, Customer.external_id == "amy")} == {
        "simulator", "wechat_mp"}


async def test_order_lifecycle_paid_delivered_refunded(aiohttp_client, example_settings, backend_url):
    client, reactions = await start(aiohttp_client, example_settings, backend_url)
    _, body = await post(client, [
        paid("e1", "A1", amount="199.50"),
        event("e2", "order_delivered", {"order_id": "A1"}, at="2026-11-25T10:00:00+08:00"),
        paid("e3", "A2", amount="100.00", at="2026-11-26T10:00:00+08:00"),
        event("e4", "order_refunded", {"order_id": "A2"}, at="2026-11-27T10:00:00+08:00"),
        event("e5", "order_delivered", {"order_id": "A9"}),
        event("e6", "order_refunded", {"order_id": "A1", "amount": "500"}),
    ])
    assert [r["status"] for r in body["results"]] == ["applied"] * 4 + ["error"] * 2
    assert body["results"][4]["error"] == "item 4: data.order_id: no order A9 (send its order_paid first)"
    assert body["results"][5]["error"].startswith("item 5: data.amount: refund 500")
    orders = {o.order_id: o for o in await rows(backend_url, Order)}
    first, second = orders["A1"], orders["A2"]
    assert (first.status, first.amount, first.items) == ("delivered", Decimal("199.50"), [{"sku": "TEE-01", "qty": 1}])
    assert first.paid_at.isoformat() == "2026-11-23T02:00:00+00:00"
    assert first.delivered_at.isoformat() == "2026-11-25T02:00:00+00:00"
    assert second.status == "refunded" and second.refunded_at is not None
    customer = await customer_row(backend_url, "o-100")
    assert (customer.orders_count, customer.lifetime_spend, customer.points_balance) == (1, Decimal("199.50"), 199)
    assert customer.last_order_at.isoformat() == "2026-11-26T02:00:00+00:00"
    assert customer.stage == "purchase"  # the second order made it a purchase again
    changes = await rows(backend_url, StageChange, StageChange.customer_id == customer.id)
    assert [(c.from_stage, c.to_stage) for c in changes] == [
        (None, "contact"), ("contact", "purchase"), ("purchase", "use"), ("use", "purchase")]
    assert changes[1].reason == "order_paid A1"
    assert [(f, t) for _, f, t in reactions.stages] == [(c.from_stage, c.to_stage) for c in changes]
    assert [k for _, k, _ in reactions.events] == ["order_paid", "order_delivered", "order_paid", "order_refunded"]
    assert reactions.events[0][2] == {"order_id": "A1", "amount": "199.50", "items": [{"sku": "TEE-01", "qty": 1}]}
    ledger = await rows(backend_url, PointsEntry, PointsEntry.customer_id == customer.id)
    assert [(p.kind, p.delta) for p in ledger] == [("earn", 199), ("earn", 100), ("adjust", -100)]


async def test_loyalty_after_three_orders(aiohttp_client, example_settings, sqlite_url):
    client, _ = await start(aiohttp_client, example_settings, sqlite_url)
    await post(client, [paid(f"e{i}", f"A{i}", amount="50") for i in range(3)])
    customer = await customer_row(sqlite_url, "o-100")
    assert customer.stage == "loyalty"
    changes = await rows(sqlite_url, StageChange)
    assert [c.to_stage for c in changes] == ["contact", "purchase", "loyalty"]
    await post(client, event("d", "order_delivered", {"order_id": "A0"}))
    assert (await customer_row(sqlite_url, "o-100")).stage == "loyalty"  # loyal customers stay loyal


async def test_points_profile_cart_and_store_visits(aiohttp_client, example_settings, sqlite_url):
    client, reactions = await start(aiohttp_client, example_settings, sqlite_url)
    _, body = await post(client, [
        event("p1", "points_changed", {"delta": 50, "reason": "签到奖励"}),
        event("p2", "points_changed", {"delta": "-20", "reason": "兑换小样"}),
        event("p3", "points_changed", {"delta": -1000, "reason": "兑换"}),
        event("p4", "points_changed", {"delta": 1.5}),
        event("u1", "profile_updated", {"nickname": "小美", "phone": "13800138000", "tags": ["vip", "上海"],
                                        "attributes": {"size": "M", "city": "上海"}, "timezone": "Asia/Tokyo"}),
        event("u2", "profile_updated", {"add_tags": ["新品"], "remove_tags": ["上海"], "attributes": {"city": None}}),
        event("u3", "profile_updated", {"timezone": "Mars/Base"}),
        event("c1", "cart_abandoned", {"items": [{"sku": "TEE-01", "qty": 2}], "amount": "398.00"}),
        event("v1", "store_visit", {"store_id": "SH-01"}),
        event("v2", "store_visit", {"store_id": "SH-01"}),
    ])
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["applied", "applied", "error", "error", "applied", "applied", "error",
                        "applied", "applied", "applied"], body
    assert body["results"][2]["error"] == "item 2: data.delta: the customer has only 30 points"
    assert body["results"][3]["error"].startswith("item 3: data.delta:")
    assert body["results"][6]["error"].startswith("item 6: data.timezone: unknown timezone 'Mars/Base'")
    customer = await customer_row(sqlite_url, "o-100")
    assert customer.points_balance == 30
    assert (customer.nickname, customer.phone, customer.timezone) == ("小美", "13800138000", "Asia/Tokyo")
    assert customer.tags == ["vip", "新品"] and customer.attributes == {"size": "M"}
    assert customer.stage == "contact"  # two visits: one engaged interaction short of interest
    await post(client, event("v3", "store_visit", {"store_id": "SH-02"}))
    customer = await customer_row(sqlite_url, "o-100")
    assert customer.stage == "interest" and customer.last_active_at is not None
    assert [k for _, k, _ in reactions.events].count("cart_abandoned") == 1
    stored = {e.event_id: e for e in await rows(sqlite_url, BusinessEvent)}
    assert stored["c1"].data == {"items": [{"sku": "TEE-01", "qty": 2}], "amount": "398.00"}
    assert json.dumps(stored["p1"].data, ensure_ascii=False) == '{"delta": 50, "reason": "签到奖励"}'
    assert (await rows(sqlite_url, Customer))[0].stage == "interest"


async def test_an_event_never_lands_on_a_simulator_customer(aiohttp_client, example_settings, backend_url):
    client, _ = await start(aiohttp_client, example_settings, backend_url)
    # Someone types into the simulator as the openid a real order will name.
    response = await client.post("/simulator/api/messages", json={"user": "o-victim", "text": "你好"})
    assert response.status == 200
    status, body = await post(client, paid("e-sim", "A-SIM", openid="o-victim"))
    assert status == 200 and body["applied"] == 1, body
    customers = {c.channel: c for c in await rows(backend_url, Customer, Customer.external_id == "o-victim")}
    assert set(customers) == {"simulator", "wechat_mp"}
    assert (customers["simulator"].orders_count, customers["simulator"].points_balance) == (0, 0)
    assert customers["wechat_mp"].orders_count == 1 and customers["wechat_mp"].points_balance > 0
    [order] = await rows(backend_url, Order)
    assert order.customer_id == customers["wechat_mp"].id
    # Nor by phone: the simulator user's phone, had it one, names nobody.
    status, body = await post(client, event("e-phone", "points_changed", {"delta": 5}, openid=None,
                                            phone="13800138000"))
    assert body["error"] == 1 and "no customer has this phone" in body["results"][0]["error"]
