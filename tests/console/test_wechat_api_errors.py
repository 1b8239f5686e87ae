"""A failing WeChat API never puts the AppSecret or the access token where people read errors:
not in the logs, not in the stored message, not in the console."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from storage.models import Conversation
from tests.console.conftest import FixedClock
from tests.support.db import messages, rows
from tests.support.wechat import APP_SECRET

OPEN = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # inside the example's business hours


async def escalate(console, openid: str = "o-alice") -> int:
    await console.server.say(openid, "转人工")
    [queued] = await rows(console.url, Conversation, Conversation.state == "queued")
    return queued.id


async def test_a_wechat_http_error_never_reveals_the_app_secret_or_the_access_token(console, fake_api,
                                                                                   caplog) -> None:
    caplog.set_level(logging.INFO)  # what `siyu serve` logs
    app = await console(clock=FixedClock(OPEN))
    conversation_id = await escalate(app)
    lin = await app.staff("lin")
    await lin.post(f"/console/api/conversations/{conversation_id}/claim")
    reply = f"/console/api/conversations/{conversation_id}/reply"

    # The send endpoint's gateway fails: its URL carries the access token.
    fake_api.send_statuses.append(502)
    status, body = await lin.post(reply, {"text": "在吗"})
    token = fake_api.valid_token
    assert status == 502 and body["delivery"] == "failed"
    assert "502" in body["error"] and "/cgi-bin/message/custom/send" in body["error"]
    assert token is not None and token not in body["error"] and "access_token=" not in body["error"]

    # The token is refused, and the token endpoint fails while it is fetched again: its URL
    # carries the AppSecret.
    fake_api.send_errors.append(40001)
    fake_api.token_statuses.append(500)
    status, body = await lin.post(reply, {"text": "还在吗"})
    assert status == 502 and body["delivery"] == "failed"
    assert "500" in body["error"] and "/cgi-bin/token" in body["error"]
    assert APP_SECRET not in body["error"] and "secret=" not in body["error"]

    stored = [m.payload["error"] for m in await messages(app.url, "o-alice") if m.delivery == "failed"]
    assert len(stored) == 2
    shown = str((await lin.get(f"/console/api/conversations/{conversation_id}"))[1])
    # Everything the service logged (the fake WeChat server's own access log aside).
    ours = [r for r in caplog.records if r.name != "aiohttp.access"]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in ours)
    assert "/cgi-bin/token: HTTP 500" in logged
    for text in (*stored, shown, logged):
        assert APP_SECRET not in text and token not in text
        assert "secret=" not in text and "access_token=" not in text
