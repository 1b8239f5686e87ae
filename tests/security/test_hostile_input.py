"""Hostile input gets a clean 4xx (or, in a batch of events, a per-event error while the others
are applied), never a 500, on every database: each case was once a 500 from outside."""

from __future__ import annotations

import json

from storage.models import BusinessEvent, Customer, Message, PointsEntry
from tests.console.support import create_staff, login, login_csrf
from tests.security.support import AUTH, event, nested, start, visit
from tests.support.db import messages, rows
from tests.support.wechat import text_xml

# --- the Official Account callback ----------------------------------------------------------------


async def test_a_timestamp_of_400_digits_is_refused_not_a_500(aiohttp_client, example_settings, backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    for timestamp in ("9" * 400, "²", "١٢٣"):  # and digits that are not ASCII
        query = {**server.query(), "timestamp": timestamp}
        response = await server.client.post("/wechat/mp", params=query, data=text_xml("o-1", "你好"))
        assert response.status == 403, (timestamp, await response.text())
        response = await server.client.get("/wechat/mp", params={**query, "echostr": "1"})
        assert response.status == 403
    assert await messages(backend_url) == []


# --- the simulator ----------------------------------------------------------------------------------


async def test_a_simulator_body_nested_5000_deep_is_refused(aiohttp_client, example_settings, backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    for body in ("[" * 5000 + "]" * 5000, json.dumps({"user": "amy", "text": "hi", "x": nested(900)})):
        response = await server.client.post("/simulator/api/messages", data=body)
        assert response.status == 400, await response.text()
    assert await messages(backend_url) == []


async def test_lone_surrogates_and_nul_in_simulator_text_or_user_are_refused(aiohttp_client, example_settings,
                                                                             backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    bodies = [
        '{"user": "amy", "text": "\\ud800"}', '{"user": "\\udfff", "text": "hi"}',
        '{"user": "amy", "text": "a\\u0000b"}', '{"user": "a\\u0000", "text": "hi"}',
        '{"user": "amy", "text": "hi", "id": "\\ud800"}',
        '{"user": "amy", "event": "subscribe", "key": "k\\u0000"}',
        '{"user": "amy", "text": NaN}',
        '{"user": "amy", "event": [-0.0]}', '{"user": "amy", "event": {}}',  # not a name at all
    ]
    for body in bodies:
        response = await server.client.post("/simulator/api/messages", data=body)
        assert response.status == 400, (body, await response.text())
    # Surrogates encoded straight into the bytes are no better than escaped ones.
    response = await server.client.post("/simulator/api/messages",
                                        data=b'{"user": "amy", "text": "\xed\xa0\x80"}')
    assert response.status == 400
    assert await messages(backend_url) == []


async def test_simulator_after_beyond_64_bits_is_refused(aiohttp_client, example_settings, backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    assert (await server.client.post("/simulator/api/messages", json={"user": "amy", "text": "你好"})).status == 200
    for after in (str(2**63), "9" * 30, "-1", "1_000", "١"):
        response = await server.client.get("/simulator/api/messages", params={"user": "amy", "after": after})
        assert response.status == 400, (after, await response.text())
    response = await server.client.get("/simulator/api/messages", params={"user": "amy\x00", "after": "0"})
    assert response.status == 400
    response = await server.client.get("/simulator/api/messages", params={"user": "amy", "after": str(2**63 - 1)})
    assert response.status == 200 and (await response.json())["messages"] == []


# --- the console ------------------------------------------------------------------------------------


async def test_console_ids_beyond_64_bits_are_not_found(aiohttp_client, example_settings, backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    await create_staff(backend_url, "lin", "admin")
    status, _ = await login(server.client, "lin")
    assert status == 303
    csrf = (await (await server.client.get("/console/api/me")).json())["csrf"]
    for conversation_id in (str(2**63), "9" * 40):
        response = await server.client.get(f"/console/api/conversations/{conversation_id}")
        assert response.status == 404, await response.text()
        for action in ("claim", "reply", "hand-back", "close"):
            response = await server.client.post(f"/console/api/conversations/{conversation_id}/{action}",
                                                json={"text": "hi"}, headers={"X-CSRF-Token": csrf})
            assert response.status == 404, (action, await response.text())


async def test_console_login_and_reply_refuse_text_no_database_stores(aiohttp_client, example_settings,
                                                                      backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    await create_staff(backend_url, "lin")
    for name, password in (("lin\x00", "x" * 10), ("lin", "a\x00b" * 5)):
        page = await (await server.client.get("/console/login")).text()
        response = await server.client.post("/console/login", allow_redirects=False,
                                            data={"name": name, "password": password, "csrf": login_csrf(page)})
        assert response.status == 400, await response.text()
    assert (await login(server.client, "lin"))[0] == 303
    csrf = (await (await server.client.get("/console/api/me")).json())["csrf"]
    response = await server.client.post("/console/api/conversations/1/reply", data='{"text": "a\\u0000"}',
                                        headers={"X-CSRF-Token": csrf})
    assert response.status == 400, await response.text()


# --- business events --------------------------------------------------------------------------------


async def post_events(server, body):
    response = await server.client.post("/api/v1/events", data=json.dumps(body), headers=AUTH)
    return response.status, await response.json()


async def test_a_batch_with_an_event_the_database_cannot_store_applies_the_others(aiohttp_client, example_settings,
                                                                                  backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    status, body = await post_events(server, [
        visit("ok-1"),
        event("big", "points_changed", {"delta": 10**30, "reason": "x"}),
        visit("ok-2"),
    ])
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == ["applied", "error", "applied"]
    assert body["results"][1]["error"].startswith("item 1: data.delta:")
    assert sorted(e.event_id for e in await rows(backend_url, BusinessEvent)) == ["ok-1", "ok-2"]


async def test_events_with_values_out_of_range_get_a_per_event_error(aiohttp_client, example_settings, backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    hostile = [
        event("e-2^63", "points_changed", {"delta": 2**63}),
        event("e-2^31", "points_changed", {"delta": 2**31}),
        event("e-year-1", "store_visit", at="0001-01-01T00:00:00+08:00"),
        event("e-year-9999", "store_visit", at="9999-12-31T23:59:59-05:00"),
        event("e-deep", "profile_updated", {"attributes": nested(900)}),
        event("e-nul", "points_changed", {"delta": 5, "reason": "a\u0000b"}),
        event("e-surrogate", "store_visit", {"store_id": "\ud800"}),
        event("e-nul-id\u0000", "store_visit"),
        event("e-openid", "store_visit", openid="o\u0000"),
        event("e-qty", "order_paid", {"order_id": "A1", "amount": "1.00", "items": [{"sku": "S", "qty": 10**30}]}),
        event("e-amount", "order_paid", {"order_id": "A2", "amount": "99999999999999.00"}),
    ]
    status, body = await post_events(server, [visit("first"), *hostile, visit("last")])
    assert status == 200, body
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["applied", *["error"] * len(hostile), "applied"], body
    assert sorted(e.event_id for e in await rows(backend_url, BusinessEvent)) == ["first", "last"]
    assert await rows(backend_url, PointsEntry) == []


async def test_points_that_would_overflow_the_balance_are_refused_per_event(aiohttp_client, example_settings,
                                                                            backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    status, body = await post_events(server, [
        event("p-1", "points_changed", {"delta": 10**9}),
        event("p-2", "points_changed", {"delta": 10**9}),
        event("p-3", "points_changed", {"delta": 10**9}),  # past 2^31 - 1
        visit("after"),
    ])
    assert status == 200
    assert [r["status"] for r in body["results"]] == ["applied", "applied", "error", "applied"], body
    assert "data.delta" in body["results"][2]["error"]
    [customer] = await rows(backend_url, Customer)
    assert customer.points_balance == 2 * 10**9


async def test_a_single_refused_event_answers_422_with_its_result(aiohttp_client, example_settings, backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    status, body = await post_events(server, event("bad", "points_changed", {"delta": 10**30}))
    assert status == 422
    assert body["error"] == 1 and body["applied"] == 0
    [result] = body["results"]
    assert result["index"] == 0 and result["id"] == "bad" and result["status"] == "error"
    assert result["error"].startswith("item 0: data.delta:")
    status, body = await post_events(server, visit("good"))
    assert status == 200 and body["applied"] == 1
    status, body = await post_events(server, [event("bad", "points_changed", {"delta": 10**30})])
    assert status == 200 and body["error"] == 1  # a batch answers 200 whatever its results


async def test_an_events_body_nested_5000_deep_is_refused(aiohttp_client, example_settings, backend_url, fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    for body in ("[" * 5000 + "]" * 5000, '{"id": NaN}', b'{"id": "\xed\xa0\x80"}'):
        response = await server.client.post("/api/v1/events", data=body, headers=AUTH)
        assert response.status == 400, await response.text()
    assert await rows(backend_url, BusinessEvent) == []
    assert await rows(backend_url, Message) == []
