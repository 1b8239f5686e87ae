"""A captured signed callback URL cannot carry another body: WeChat's plain-mode signature covers
the timestamp and nonce only, so each pair is remembered while its timestamp is accepted."""

from __future__ import annotations

import logging

import pytest

from tests.support.db import customer_row, messages
from tests.support.wechat import text_xml


async def test_a_captured_plain_mode_url_is_refused_with_another_body(wechat, backend_url):
    server = await wechat(url=backend_url, mode="plain")
    await server.say("o-victim", "你好")  # the customer whose points the replay is after
    captured = server.query()
    mine = text_xml("o-alice", "几点开门")
    status, body = await server.post(mine, params=captured)
    assert status == 200
    answer = server.read_reply(body)
    # WeChat retrying the same delivery (same URL, same body) is answered as the first time.
    status, again = await server.post(mine, params=captured)
    assert status == 200 and server.read_reply(again)["Content"] == answer["Content"]

    stored = len(await messages(backend_url, "o-victim"))
    status, body = await server.post(text_xml("o-victim", "查积分"), params=captured)
    assert status == 403 and "replayed" in body
    assert len(await messages(backend_url, "o-victim")) == stored
    assert len([m for m in await messages(backend_url, "o-alice") if m.direction == "in"]) == 1


async def test_a_captured_safe_mode_url_cannot_come_back_as_plain_mode(wechat, backend_url):
    server = await wechat(url=backend_url, mode="safe")
    status, _ = await server.post(text_xml("o-alice", "几点开门"))
    assert status == 200
    xml = text_xml("o-alice", "你好")
    body, encrypted = server.envelope(xml)
    captured = server.query(encrypt=encrypted)
    status, _ = await server.post(xml, raw_body=body, params=captured)
    assert status == 200
    # The same timestamp, nonce and plain signature, without encrypt_type, and a plaintext body.
    stripped = {key: captured[key] for key in ("signature", "timestamp", "nonce")}
    status, _ = await server.post("", raw_body=text_xml("o-victim", "查积分"), params=stripped)
    assert status == 403
    assert await customer_row(backend_url, "o-victim") is None


async def test_a_url_used_on_one_process_is_refused_with_another_body_on_the_next(wechat, backend_url):
    if backend_url.startswith("sqlite"):
        pytest.skip("SQLite runs one process: its pairs are kept in memory")
    first, second = await wechat(url=backend_url), await wechat(url=backend_url)
    captured = first.query()
    assert (await first.post(text_xml("o-alice", "你好"), params=captured))[0] == 200
    status, _ = await second.post(text_xml("o-victim", "查积分"), params=captured)
    assert status == 403


async def test_plain_mode_says_at_start_up_that_safe_mode_is_recommended(wechat, sqlite_url, caplog):
    caplog.set_level(logging.WARNING)
    server = await wechat(url=sqlite_url, encoding_aes_key="")
    assert (await server.say("o-alice", "你好")) is not None
    [warning] = [r for r in caplog.records if "plain mode" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "Safe mode" in warning.getMessage()
    caplog.clear()
    await wechat(url=sqlite_url)  # with an EncodingAESKey: nothing to say
    assert not [r for r in caplog.records if "plain mode" in r.getMessage()]


async def test_pairs_past_the_timestamp_window_are_forgotten(backend_url):
    from datetime import UTC, datetime, timedelta

    from storage.callback_nonces import forget_expired_nonces, remember_nonce
    from storage.db import make_engine, make_sessionmaker

    engine = make_engine(backend_url)
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    try:
        assert await remember_nonce(sessions, "wechat_mp", 1, "old", "a" * 64, now - timedelta(seconds=1)) is None
        assert await remember_nonce(sessions, "wechat_mp", 2, "new", "b" * 64, now + timedelta(minutes=5)) is None
        assert await remember_nonce(sessions, "wechat_mp", 2, "new", "c" * 64, now) == "b" * 64
        assert await forget_expired_nonces(sessions, now) == 1
        assert await remember_nonce(sessions, "wechat_mp", 1, "old", "d" * 64, now) is None
    finally:
        await engine.dispose()
