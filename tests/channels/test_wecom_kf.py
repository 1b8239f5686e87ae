"""WeCom Customer Service over HTTP: encrypted callbacks in, sync_msg pulled from a fake WeCom,
replies out through send_msg."""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bot.app import keys
from bot.app.web import create_app
from bot.channels.wechat_crypto import MessageCrypto
from bot.config.settings import KfWelcome, Settings
from storage.models import Customer, Event
from tests.support.db import messages, rows
from tests.support.fake_wecom_api import FakeWecomApi
from tests.support.wecom import (
    AES_KEY,
    CORP_ID,
    SECRET,
    TOKEN,
    WecomKfServer,
    notification_xml,
    signature,
    wecom_encrypt,
)

Start = Callable[..., Awaitable[WecomKfServer]]


def kf_settings(base: Settings, url: str, api: str, **kf: Any) -> Settings:
    wecom_kf = base.channels.wecom_kf.model_copy(update={
        "enabled": True, "corp_id": CORP_ID, "secret": SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY,
        "api_base_url": api, **kf})
    return base.model_copy(update={"storage": base.storage.model_copy(update={"url": url}),
                                   "channels": base.channels.model_copy(update={"wecom_kf": wecom_kf})})


@pytest.fixture
async def fake_wecom(aiohttp_server: Any) -> FakeWecomApi:
    fake = FakeWecomApi(corp_id=CORP_ID, secret=SECRET)
    fake.server = await aiohttp_server(fake.app())
    return fake


@pytest.fixture
async def kf(aiohttp_client: Any, fake_wecom: FakeWecomApi, example_settings: Settings,
             sqlite_url: str) -> AsyncIterator[Start]:
    async def start(url: str | None = None, **options: Any) -> WecomKfServer:
        settings = kf_settings(example_settings, url or sqlite_url, fake_wecom.base_url, **options)
        return WecomKfServer(await aiohttp_client(create_app(settings)))

    yield start


async def pulled(server: WecomKfServer) -> None:
    """Every pull the notifications started has finished."""
    await server.client.app[keys.TASKS].drain()


async def notify_and_pull(server: WecomKfServer, open_kfid: str = "wkKF1") -> None:
    status, body = await server.notify(open_kfid)
    assert (status, body) == (200, "success")
    await pulled(server)


async def first_pull(server: WecomKfServer, fake: FakeWecomApi) -> None:
    """An account already pulled once (its backlog stored), so new messages are answered."""
    await notify_and_pull(server)


def sent_texts(fake: FakeWecomApi, user: str | None = None) -> list[str]:
    return [s["text"]["content"] for s in fake.sent if user is None or s["touser"] == user]


# ---- crypto against an independently computed vector ------------------------------------------

def test_decrypts_a_wecom_vector_computed_with_the_published_algorithm() -> None:
    key = base64.b64decode(AES_KEY + "=")
    message = b"<xml><Event>kf_msg_or_event</Event></xml>"
    plain = bytes(range(16)) + struct.pack(">I", len(message)) + message + CORP_ID.encode()
    plain += bytes([32 - len(plain) % 32]) * (32 - len(plain) % 32)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    encrypt = base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()
    expected_signature = hashlib.sha1("".join(sorted([TOKEN, "1700000000", "n1", encrypt])).encode()).hexdigest()

    assert MessageCrypto(TOKEN, AES_KEY, CORP_ID).decrypt(encrypt) == message.decode()
    assert signature(TOKEN, "1700000000", "n1", encrypt) == expected_signature


async def test_url_verification_answers_the_decrypted_echostr(kf: Start) -> None:
    server = await kf()
    echo = wecom_encrypt("8472910384756")
    response = await server.client.get("/wecom/kf", params={**server.query(echo), "echostr": echo})
    assert (response.status, await response.text()) == (200, "8472910384756")


async def test_url_verification_with_a_bad_signature_is_refused(kf: Start) -> None:
    server = await kf()
    echo = wecom_encrypt("8472910384756")
    params = {**server.query(echo), "echostr": echo, "msg_signature": "0" * 40}
    assert (await server.client.get("/wecom/kf", params=params)).status == 403


# ---- refusals -----------------------------------------------------------------------------------

async def test_bad_signature_stale_timestamp_malformed_and_oversized_bodies_store_nothing(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf()
    fake_wecom.customer_text("wmCustomer1", "你好")
    encrypt = wecom_encrypt(notification_xml())
    body = f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    assert (await server.post(body, {**server.query(encrypt), "msg_signature": "f" * 40}))[0] == 403
    assert (await server.post(body, server.query(encrypt, timestamp=int(time.time()) - 3600)))[0] == 403
    assert (await server.post("<xml><Encrypt>", server.query("x")))[0] == 400
    assert (await server.post("<xml><Encrypt><![CDATA[bm90IGFlcw==]]></Encrypt></xml>",
                              server.query("bm90IGFlcw==")))[0] == 400
    other_corp = wecom_encrypt(notification_xml(), receive_id="wwSomeoneElse")
    assert (await server.post(f"<xml><Encrypt><![CDATA[{other_corp}]]></Encrypt></xml>",
                              server.query(other_corp)))[0] == 400
    huge = "x" * 70_000
    assert (await server.post(f"<xml><Encrypt><![CDATA[{huge}]]></Encrypt></xml>", server.query(huge)))[0] == 413
    await pulled(server)
    assert fake_wecom.sync_calls == []
    assert await messages(sqlite_url) == []


# ---- pulling ------------------------------------------------------------------------------------

async def test_the_first_pull_stores_the_backlog_without_answering_it(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf()
    fake_wecom.customer_text("wmOld", "三天前的消息")
    await notify_and_pull(server)
    assert fake_wecom.sent == []
    assert [m.text for m in await messages(sqlite_url, "wmOld")] == ["三天前的消息"]

    fake_wecom.customer_text("wmOld", "你好")
    await notify_and_pull(server)
    assert len(sent_texts(fake_wecom, "wmOld")) == 1
    assert fake_wecom.sent[0]["open_kfid"] == "wkKF1"


async def test_a_customer_message_is_answered_through_send_msg_with_our_msgid(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf()
    await first_pull(server, fake_wecom)
    fake_wecom.customer_text("wmAlice", "你好")
    await notify_and_pull(server)
    [sent] = fake_wecom.sent
    assert sent["touser"] == "wmAlice" and sent["msgtype"] == "text" and sent["text"]["content"]
    stored = await messages(sqlite_url, "wmAlice")
    assert [(m.direction, m.delivery) for m in stored] == [("in", None), ("out", "push")]
    assert sent["msgid"] == f"siyu-m{stored[1].id}"
    [customer] = await rows(sqlite_url, Customer, Customer.external_id == "wmAlice")
    assert customer.channel == "wecom_kf"


async def test_has_more_is_followed_across_pages_and_an_empty_page(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf(sync_limit=2)
    await first_pull(server, fake_wecom)
    for n in range(5):
        fake_wecom.customer_text(f"wmPage{n}", "你好")
    fake_wecom.empty_pages_at.add(2)
    await notify_and_pull(server)
    assert sorted(s["touser"] for s in fake_wecom.sent) == [f"wmPage{n}" for n in range(5)]


async def test_a_retried_notification_answers_nothing_twice(kf: Start, fake_wecom: FakeWecomApi) -> None:
    server = await kf()
    await first_pull(server, fake_wecom)
    fake_wecom.customer_text("wmBob", "你好")
    for _ in range(3):
        assert (await server.notify())[0] == 200
    await pulled(server)
    await notify_and_pull(server)
    assert len(fake_wecom.sent) == 1


async def test_the_cursor_survives_a_restart(kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf()
    await first_pull(server, fake_wecom)
    fake_wecom.customer_text("wmCarol", "你好")
    await notify_and_pull(server)
    await server.client.close()

    restarted = await kf()
    fake_wecom.customer_text("wmCarol", "在吗")
    await notify_and_pull(restarted)
    assert [s["touser"] for s in fake_wecom.sent] == ["wmCarol", "wmCarol"]
    assert [m.text for m in await messages(sqlite_url, "wmCarol") if m.direction == "in"] == ["你好", "在吗"]
    # The second pull started where the first one stopped.
    assert fake_wecom.sync_calls[-1]["cursor"] == "1"


async def test_a_message_seen_again_after_the_cursor_was_lost_is_not_answered_twice(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf()
    await first_pull(server, fake_wecom)
    fake_wecom.customer_text("wmDave", "你好")
    await notify_and_pull(server)
    # WeCom serves the same message again (as after a cursor that was never stored).
    fake_wecom.items.append(dict(fake_wecom.items[-1]))
    await notify_and_pull(server)
    assert len(fake_wecom.sent) == 1
    assert len([m for m in await messages(sqlite_url, "wmDave") if m.direction == "in"]) == 1


async def test_servicer_messages_are_recorded_and_not_answered(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf()
    await first_pull(server, fake_wecom)
    fake_wecom.add({"open_kfid": "wkKF1", "external_userid": "wmEve", "origin": 5, "servicer_userid": "zhangsan",
                    "msgtype": "text", "text": {"content": "您好，我是客服小张"}})
    await notify_and_pull(server)
    assert fake_wecom.sent == []
    [staff] = await messages(sqlite_url, "wmEve")
    assert (staff.direction, staff.delivery, staff.text) == ("out", "staff", "您好，我是客服小张")


async def test_message_types_are_stored_and_unknown_ones_acknowledged(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf()
    await first_pull(server, fake_wecom)
    base = {"open_kfid": "wkKF1", "external_userid": "wmFrank", "origin": 3}
    fake_wecom.add({**base, "msgtype": "image", "image": {"media_id": "MEDIA1"}})
    fake_wecom.add({**base, "msgtype": "location", "location": {"latitude": 23.1, "longitude": 113.3,
                                                                 "name": "天河城", "address": "天河路"}})
    fake_wecom.add({**base, "msgtype": "link", "link": {"title": "新品", "url": "https://example.com"}})
    fake_wecom.add({**base, "msgtype": "channels_shop_product", "channels_shop_product": {"product_id": "1"}})
    fake_wecom.add({**base, "msgtype": "text", "text": {"content": "查积分", "menu_id": "points"}})
    await notify_and_pull(server)
    kinds = [m.kind for m in await messages(sqlite_url, "wmFrank") if m.direction == "in"]
    assert kinds == ["image", "location", "link", "unknown", "event"]


# ---- sending ------------------------------------------------------------------------------------

async def test_a_send_refused_with_95018_is_recorded_failed(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf()
    await first_pull(server, fake_wecom)
    fake_wecom.send_errors.append(95018)
    fake_wecom.customer_text("wmGina", "你好")
    await notify_and_pull(server)
    assert fake_wecom.sent == []
    reply = next(m for m in await messages(sqlite_url, "wmGina") if m.direction == "out")
    assert reply.delivery == "failed" and "95018" in reply.payload["error"]


async def test_at_most_five_messages_go_out_in_the_window(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf()
    await first_pull(server, fake_wecom)
    fake_wecom.customer_text("wmHank", "你好")
    await notify_and_pull(server)
    outbox = server.client.app[keys.OUTBOX]
    from bot.channels.base import Text
    from bot.outbox.outbox import Push
    [reply] = [m for m in await messages(sqlite_url, "wmHank") if m.direction == "out"]
    results = await outbox.deliver("wecom_kf", "wmHank", [Push(reply.id, Text(f"第{n}条")) for n in range(6)])
    assert [r.state for r in results] == ["push"] * 4 + ["failed"] * 2  # the answer took the first of five
    assert [r.reason for r in results][4:] == ["window_quota_used"] * 2
    # Every push of the one stored message carried its msgid: WeCom delivered it once.
    assert len(fake_wecom.sent) == 1


# ---- events -------------------------------------------------------------------------------------

async def test_enter_session_sends_the_welcome_for_its_scene_and_records_the_source(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf(welcome=[KfWelcome(text="欢迎光临"), KfWelcome(scene="store", text="欢迎来到门店客服")])
    await first_pull(server, fake_wecom)
    fake_wecom.add({"open_kfid": "wkKF1", "origin": 4, "msgtype": "event", "event": {
        "event_type": "enter_session", "open_kfid": "wkKF1", "external_userid": "wmIvy", "scene": "store",
        "scene_param": "sh01", "welcome_code": "WELCOME-1"}})
    await notify_and_pull(server)
    assert fake_wecom.welcomes == [{"code": "WELCOME-1", "msgid": fake_wecom.welcomes[0]["msgid"],
                                    "msgtype": "text", "text": {"content": "欢迎来到门店客服"}}]
    [customer] = await rows(sqlite_url, Customer, Customer.external_id == "wmIvy")
    assert customer.source == "store:sh01"
    # Seen again, the event sends nothing more.
    fake_wecom.items.append(dict(fake_wecom.items[-1]))
    await notify_and_pull(server)
    assert len(fake_wecom.welcomes) == 1


async def test_msg_send_fail_and_recall_mark_the_messages(
        kf: Start, fake_wecom: FakeWecomApi, sqlite_url: str) -> None:
    server = await kf()
    await first_pull(server, fake_wecom)
    asked = fake_wecom.customer_text("wmJack", "你好")
    await notify_and_pull(server)
    [sent] = fake_wecom.sent
    event = {"open_kfid": "wkKF1", "external_userid": "wmJack"}
    fake_wecom.add({"open_kfid": "wkKF1", "origin": 4, "msgtype": "event", "event": {
        **event, "event_type": "msg_send_fail", "fail_msgid": sent["msgid"], "fail_type": 10}})
    fake_wecom.add({"open_kfid": "wkKF1", "origin": 4, "msgtype": "event", "event": {
        **event, "event_type": "user_recall_msg", "recall_msgid": asked["msgid"]}})
    await notify_and_pull(server)
    stored = {m.direction: m for m in await messages(sqlite_url, "wmJack") if m.kind != "event"}
    assert stored["out"].delivery == "failed" and "customer rejected" in stored["out"].payload["error"]
    assert stored["in"].delivery == "recalled"
    kinds = {e.kind for e in await rows(sqlite_url, Event)}
    assert {"wecom_kf.msg_send_fail", "wecom_kf.user_recall_msg"} <= kinds
