"""A group gateway's two sides for tests: signed events into POST /group/hook, and a local fake
`send_url` that checks Siyu's signature and records every message it accepted."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ContentTypeError, web
from aiohttp.test_utils import TestClient, TestServer

from bot.channels.group_gateway.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
    signature_matches,
)

SECRET = "group-gateway-test-secret"
GROUP = {"id": "g-100", "name": "门店会员群"}
_ids = itertools.count(1)


@dataclass
class FakeGateway:
    """The gateway's `send_url`: 200 for a correctly signed message, 401 otherwise."""

    secret: str = SECRET
    received: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answer the next sends with these first
    refused_signatures: int = 0
    server: TestServer | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/send"))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/send", self._send)
        return app

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        if (not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300
                or not signature_matches(self.secret, timestamp, body, request.headers.get(SIGNATURE_HEADER, ""))):
            self.refused_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        if self.statuses:
            return web.json_response({"error": "not now"}, status=self.statuses.pop(0))
        self.received.append(json.loads(body))
        self._arrived.set()
        return web.json_response({"ok": True})

    def private(self, user_id: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("to", {}).get("user_id") == user_id]

    def posts(self, group_id: str = GROUP["id"]) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("group_id") == group_id]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        async def _wait() -> None:
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(_wait(), timeout)
        return self.received


@dataclass
class Gateway:
    """What a gateway sends to Siyu, signed as the contract says."""

    client: TestClient
    secret: str = SECRET

    async def send(self, event: dict[str, Any] | None = None, *, raw: bytes | None = None,
                   secret: str | None = None, timestamp: int | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        body = raw if raw is not None else json.dumps(event, ensure_ascii=False).encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signed = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(secret or self.secret, stamp, body),
                  "Content-Type": "application/json", **(headers or {})}
        response = await self.client.post("/group/hook", data=body, headers=signed)
        try:
            return response.status, await response.json()
        except (ValueError, ContentTypeError):
            return response.status, await response.text()

    async def say(self, member: str, text: str, *, name: str | None = None, unionid: str | None = None,
                  mentioned: bool | None = None, event_id: str | None = None,
                  group: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """A member's message; returns the replies to post into the group (asserting a 200)."""
        status, body = await self.send(message(member, text, name=name, unionid=unionid, mentioned=mentioned,
                                               event_id=event_id, group=group))
        assert status == 200, body
        return list(body["replies"])

    async def join(self, *members: str, event_id: str | None = None, group: dict[str, str] | None = None,
                   unionids: dict[str, str] | None = None) -> Any:
        status, body = await self.send(membership("join", members, event_id=event_id, group=group,
                                                  unionids=unionids))
        assert status == 200, body
        return body

    async def leave(self, *members: str, event_id: str | None = None, group: dict[str, str] | None = None) -> Any:
        status, body = await self.send(membership("leave", members, event_id=event_id, group=group))
        assert status == 200, body
        return body


def message(member: str, text: str, *, name: str | None = None, unionid: str | None = None,
            mentioned: bool | None = None, event_id: str | None = None,
            group: dict[str, str] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"id": event_id or f"gm-{next(_ids)}", "type": "message", "group": group or GROUP,
                             "sender": {"id": member, "name": name or member, "unionid": unionid}, "text": text,
                             "sent_at": "2026-12-01T10:00:00+08:00"}
    if mentioned is not None:
        event["mentioned"] = mentioned
    return event


def membership(kind: str, members: tuple[str, ...] | list[str], *, event_id: str | None = None,
               group: dict[str, str] | None = None, unionids: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": event_id or f"g{kind[0]}-{next(_ids)}", "type": kind, "group": group or GROUP,
            "members": [{"id": m, "name": m, **({"unionid": unionids[m]} if unionids and m in unionids else {})}
                        for m in members],
            "sent_at": "2026-12-01T10:00:00+08:00"}


async def settled(read: Any, done: Any, timeout: float = 10.0) -> Any:
    """`await read()` again until `done(result)`: for what the service records after it answered
    (a push's delivery state), without guessing how long that takes."""
    async def _poll() -> Any:
        while True:
            result = await read()
            if done(result):
                return result
            await asyncio.sleep(0.05)
    return await asyncio.wait_for(_poll(), timeout)
