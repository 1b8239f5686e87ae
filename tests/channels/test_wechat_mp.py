"""The Official Account callback, driven over HTTP as WeChat drives it."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.app import keys
from tests.support.db import customer_row, database_held, events, messages
from tests.support.wechat import ACCOUNT, event_xml, message_xml, sha1_signature, text_xml

HOURS_REPLY = "亲，我们的门店营业时间是每天 10:00–22:00，线上客服 9:00–21:00。"


# --- URL verification ---------------------------------------------------------------------------

async def test_url_verification_echoes_echostr(wechat, backend_url):
    server = await wechat(url=backend_url)
    response = await server.client.get("/wechat/mp", params={**server.query(), "echostr": "8964123"})
    assert response.status == 200
    assert await response.text() == "8964123"


async def test_url_verification_with_wrong_token_is_refused(wechat, backend_url):
    server = await wechat(url=backend_url)
    server.token = "not-our-token"
    response = await server.client.get("/wechat/mp", params={**server.query(), "echostr": "1"})
    assert response.status == 403


# --- the three modes ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["plain", "compatible", "safe"])
async def test_text_message_is_answered_in_every_mode(wechat, backend_url, mode):
    server = await wechat(url=backend_url, mode=mode)
    reply = await server.say("o-alice", "请问你们几点开门？")
    assert reply is not None
    assert reply["MsgType"] == "text"
    assert reply["Content"] == HOURS_REPLY
    assert reply["ToUserName"] == "o-alice" and reply["FromUserName"] == ACCOUNT
    stored = await messages(backend_url, "o-alice")
    assert [(m.direction, m.text) for m in stored] == [("in", "请问你们几点开门？"), ("out", HOURS_REPLY)]


async def test_safe_mode_rejects_a_wrong_msg_signature(wechat, backend_url):
    server = await wechat(url=backend_url, mode="safe")
    body, encrypted = server.envelope(text_xml("o-alice", "你好"))
    query = server.query(encrypt=encrypted)
    query["msg_signature"] = sha1_signature("forged", query["timestamp"], query["nonce"], encrypted)
    status, _ = await server.post("", raw_body=body, params=query)
    assert status == 403


async def test_safe_mode_rejects_ciphertext_that_does_not_decrypt(wechat, backend_url):
    server = await wechat(url=backend_url, mode="safe")
    garbage = "QUJDREVGR0hJSktMTU5PUA=="  # valid base64, one AES block of nonsense
    body = f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{garbage}]]></Encrypt></xml>"
    status, text = await server.post("", raw_body=body, params=server.query(encrypt=garbage))
    assert status == 400, text


@pytest.mark.parametrize("mode", ["plain", "safe"])
async def test_reply_text_containing_cdata_terminator_survives(wechat, backend_url, mode):
    tricky = "代码是 ]]><MsgType>news</MsgType> 哦"
    server = await wechat(url=backend_url, mode=mode, rules=[{"name": "tricky", "match": "exact", "patterns": ["暗号"],
                                             "reply": tricky}])
    reply = await server.say("o-eve", "暗号")
    assert reply["Content"] == tricky and reply["MsgType"] == "text"


# --- refusing bad input -------------------------------------------------------------------------

async def test_bad_signature_is_refused_and_nothing_stored(wechat, backend_url):
    server = await wechat(url=backend_url)
    server.token = "forged"
    status, _ = await server.post(text_xml("o-mallory", "你好"))
    assert status == 403
    assert await messages(backend_url) == []


async def test_stale_timestamp_is_refused(wechat, backend_url):
    server = await wechat(url=backend_url)
    status, text = await server.post(text_xml("o-alice", "你好"), timestamp=int(time.time()) - 3600)
    assert status == 403 and "stale" in text
    assert await messages(backend_url) == []


@pytest.mark.parametrize("body", [
    "<xml><ToUserName>unclosed",
    "not xml at all",
    "<xml><FromUserName>o-x</FromUserName></xml>",  # no MsgType
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><xml><MsgType>&b;</MsgType></xml>',
])
async def test_malformed_xml_is_a_400_not_a_crash(wechat, backend_url, body):
    server = await wechat(url=backend_url)
    status, _ = await server.post("", raw_body=body)
    assert status == 400
    reply = await server.say("o-alice", "你好")  # the worker is still fine
    assert reply is not None


async def test_body_that_is_not_utf8_is_a_400(wechat, backend_url):
    server = await wechat(url=backend_url)
    status, _ = await server.post("", raw_body=text_xml("o-alice", "你好").encode("gbk"))
    assert status == 400


async def test_oversized_body_is_refused(wechat, backend_url):
    server = await wechat(url=backend_url, max_body_bytes=2048)
    status, _ = await server.post(text_xml("o-alice", "好" * 4000))
    assert status == 413
    assert await messages(backend_url) == []


# --- message and event types --------------------------------------------------------------------

MEDIA = {
    "image": {"PicUrl": "http://mmbiz.example/pic.jpg", "MediaId": "media-1"},
    "video": {"MediaId": "media-2", "ThumbMediaId": "thumb-2"},
    "shortvideo": {"MediaId": "media-3", "ThumbMediaId": "thumb-3"},
    "location": {"Location_X": "31.2304", "Location_Y": "121.4737", "Scale": 15, "Label": "上海市黄浦区"},
    "link": {"Title": "新品", "Description": "春季新品", "Url": "https://example.com/new"},
}


@pytest.mark.parametrize("msg_type", sorted(MEDIA))
async def test_media_messages_are_stored_and_acknowledged_politely(wechat, backend_url, msg_type):
    server = await wechat(url=backend_url)
    status, body = await server.post(message_xml("o-bob", msg_type, MEDIA[msg_type]))
    assert status == 200
    reply = server.read_reply(body)
    assert reply is not None and "文字" in reply["Content"]
    stored = await messages(backend_url, "o-bob")
    assert stored[0].kind == msg_type and stored[0].direction == "in"
    assert stored[0].payload["MsgType"] == msg_type


async def test_voice_with_recognition_is_understood_as_words(wechat, backend_url):
    server = await wechat(url=backend_url)
    status, body = await server.post(message_xml(
        "o-bob", "voice", {"MediaId": "v-1", "Format": "amr", "Recognition": "你们营业时间是几点"}))
    assert status == 200
    assert server.read_reply(body)["Content"] == HOURS_REPLY


async def test_subscribe_gets_the_welcome(wechat, backend_url):
    server = await wechat(url=backend_url)
    status, body = await server.post(event_xml("o-new", "subscribe", {"EventKey": ""}))
    assert status == 200
    assert "欢迎关注" in server.read_reply(body)["Content"]
    customer = await customer_row(backend_url, "o-new")
    assert customer.subscribed and customer.source is None
    assert [e.kind for e in await events(backend_url)][:2] == ["first_contact", "subscribe"]
    assert "flow_started" in [e.kind for e in await events(backend_url)]  # onboarding began


async def test_subscribe_through_a_channel_qr_code_records_the_source(wechat, backend_url):
    server = await wechat(url=backend_url)
    status, body = await server.post(event_xml("o-shop", "subscribe",
                                               {"EventKey": "qrscene_store_qr", "Ticket": "TICKET"}))
    assert status == 200
    assert "门店" in server.read_reply(body)["Content"]
    assert (await customer_row(backend_url, "o-shop")).source == "store_qr"


async def test_unsubscribe_is_recorded_without_a_reply(wechat, backend_url):
    server = await wechat(url=backend_url)
    await server.post(event_xml("o-gone", "subscribe", {"EventKey": ""}, create_time=1700000000))
    status, body = await server.post(event_xml("o-gone", "unsubscribe", create_time=1700000100))
    assert (status, body) == (200, "success")
    assert not (await customer_row(backend_url, "o-gone")).subscribed


async def test_scan_of_a_channel_code_is_logged(wechat, backend_url):
    server = await wechat(url=backend_url)
    status, body = await server.post(event_xml("o-fan", "SCAN", {"EventKey": "live_stream", "Ticket": "T"}))
    assert (status, body) == (200, "success")
    scans = await events(backend_url, "scan")
    assert scans[0].data["key"] == "live_stream"


async def test_menu_click_is_answered_by_rules(wechat, backend_url):
    server = await wechat(url=backend_url)
    status, body = await server.post(event_xml("o-fan", "CLICK", {"EventKey": "营业时间"}))
    assert status == 200
    assert server.read_reply(body)["Content"] == HOURS_REPLY


@pytest.mark.parametrize("event,fields", [
    ("VIEW", {"EventKey": "https://example.com/shop"}),
    ("LOCATION", {"Latitude": 23.137466, "Longitude": 113.352425, "Precision": 119.385040}),
    ("TEMPLATESENDJOBFINISH", {"MsgID": 200163836, "Status": "success"}),
    ("CLICK", {"EventKey": "UNKNOWN_MENU_KEY"}),
])
async def test_silent_events_are_stored_and_acknowledged(wechat, backend_url, event, fields):
    server = await wechat(url=backend_url)
    status, body = await server.post(event_xml("o-fan", event, fields))
    assert (status, body) == (200, "success")
    stored = await messages(backend_url, "o-fan")
    assert len(stored) == 1 and stored[0].kind == "event" and stored[0].payload["Event"] == event


async def test_unknown_message_type_is_stored_and_acknowledged(wechat, backend_url):
    server = await wechat(url=backend_url)
    status, body = await server.post(message_xml("o-fan", "hologram", {"Beam": "on"}))
    assert (status, body) == (200, "success")
    stored = await messages(backend_url, "o-fan")
    assert stored[0].kind == "unknown" and stored[0].payload["Beam"] == "on"


# --- retries, the deadline, concurrency ---------------------------------------------------------

async def test_a_retried_message_is_processed_once_and_gets_the_same_answer(wechat, backend_url):
    server = await wechat(url=backend_url, mode="safe")
    xml = text_xml("o-alice", "几点开门", msg_id=6054768590064713728)
    answers = []
    for _ in range(3):  # WeChat delivers up to three times
        status, body = await server.post(xml)
        assert status == 200
        answers.append(server.read_reply(body)["Content"])
    assert answers == [HOURS_REPLY] * 3
    assert [m.direction for m in await messages(backend_url, "o-alice")] == ["in", "out"]


async def test_a_retried_event_is_processed_once(wechat, backend_url):
    server = await wechat(url=backend_url)
    xml = event_xml("o-new", "subscribe", {"EventKey": ""}, create_time=1700000000)
    first = server.read_reply((await server.post(xml))[1])
    second = server.read_reply((await server.post(xml))[1])
    # The same reply; its CreateTime is when it was written, a second later across a boundary.
    assert int(first.pop("CreateTime")) <= int(second.pop("CreateTime"))
    assert first == second and "欢迎关注" in first["Content"]
    assert len(await messages(backend_url, "o-new")) == 2
    assert [e.kind for e in await events(backend_url, "subscribe")] == ["subscribe"]


async def test_an_overloaded_pipeline_answers_503_at_once_and_the_retry_is_answered(wechat, backend_url):
    server = await wechat(url=backend_url)
    pipeline = server.client.server.app[keys.PIPELINE]
    xml = text_xml("o-busy", "几点开门", msg_id=6054768590064713999)
    pipeline.max_in_flight = 0  # as if 2,000 messages were already waiting
    status, text = await server.post(xml)
    assert status == 503 and text == "overloaded"
    assert await messages(backend_url) == []  # nothing stored: WeChat's retry is a first delivery
    pipeline.max_in_flight = 2000
    status, body = await server.post(xml)
    assert status == 200 and server.read_reply(body)["Content"] == HOURS_REPLY
    assert [m.direction for m in await messages(backend_url, "o-busy")] == ["in", "out"]
    metrics = await (await server.client.get("/metrics")).text()
    assert 'reason="overloaded"' in metrics


async def test_slow_answer_falls_back_to_a_customer_service_message(wechat, backend_url, fake_api):
    server = await wechat(url=backend_url, reply_deadline_seconds=0.2)
    await server.say("o-warm", "你好")  # the customer exists; now the database stalls
    async with database_held(backend_url):
        started = time.monotonic()
        status, body = await server.post(text_xml("o-warm", "几点开门"))
        assert (status, body) == (200, "success")
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.3)
    sent = await fake_api.wait_for_sent(1)
    assert sent == [{"touser": "o-warm", "msgtype": "text", "text": {"content": HOURS_REPLY}}]
    for _ in range(50):
        stored = await messages(backend_url, "o-warm")
        if stored[-1].delivery == "push":
            break
        await asyncio.sleep(0.05)
    assert stored[-1].delivery == "push"
    # WeChat's retry of the same message must not send the answer a second time.
    retry = await server.post(text_xml("o-warm", "几点开门", msg_id=int(stored[-2].platform_msg_id[4:])))
    assert retry == (200, "success")
    await asyncio.sleep(0.1)
    assert len(fake_api.sent) == 1


async def test_concurrent_messages_of_one_customer_are_handled_one_at_a_time(wechat, backend_url):
    server = await wechat(url=backend_url)
    texts = [f"几点开门 {i}" for i in range(20)]
    replies = await asyncio.gather(*(server.say("o-busy", t) for t in texts))
    assert all(r["Content"] == HOURS_REPLY for r in replies)
    stored = await messages(backend_url, "o-busy")
    assert [m.seq for m in stored] == list(range(1, 41))
    # Every answer directly follows its own question: no interleaving.
    for question, answer in zip(stored[0::2], stored[1::2], strict=True):
        assert question.direction == "in" and answer.direction == "out"
        assert answer.reply_to_id == question.id
    assert sorted(m.text for m in stored[0::2]) == sorted(texts)


# --- outbound API: token and errors -------------------------------------------------------------

async def test_push_failures_are_recorded_with_the_platform_error(wechat, backend_url, fake_api):
    server = await wechat(url=backend_url, reply_deadline_seconds=0.001)
    fake_api.send_errors = [45015]  # the 48-hour window has closed
    async with database_held(backend_url):
        status, body = await server.post(text_xml("o-late", "几点开门"))
    assert (status, body) == (200, "success")
    for _ in range(100):
        stored = await messages(backend_url, "o-late")
        if stored and stored[-1].delivery == "failed":
            break
        await asyncio.sleep(0.05)
    assert stored[-1].delivery == "failed"
    assert "45015" in stored[-1].payload["error"]
    assert fake_api.sent == []


async def test_rejected_access_token_is_refreshed_once_and_the_push_retried(wechat, backend_url, fake_api):
    server = await wechat(url=backend_url, reply_deadline_seconds=0.001)
    async with database_held(backend_url):
        assert await server.post(text_xml("o-tok", "你好")) == (200, "success")
    await fake_api.wait_for_sent(1)
    fake_api.tokens_issued.append("token-from-another-client")  # invalidates ours, as WeChat does
    async with database_held(backend_url):
        assert await server.post(text_xml("o-tok", "几点开门")) == (200, "success")
    sent = await fake_api.wait_for_sent(2)
    assert sent[1]["text"]["content"] == HOURS_REPLY
    assert len(fake_api.tokens_issued) == 3  # ours, the other client's, our refresh


async def test_health_and_metrics(wechat, backend_url):
    server = await wechat(url=backend_url)
    await server.say("o-alice", "你好")
    health = await server.client.get("/healthz")
    assert health.status == 200 and (await health.json())["database"] is True
    metrics = await (await server.client.get("/metrics")).text()
    assert 'siyu_inbound_total{channel="wechat_mp",kind="text"} 1.0' in metrics
