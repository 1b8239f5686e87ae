"""A local fake of the WeChat API: token and customer-service endpoints, recording every call."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class FakeWechatApi:
    app_id: str
    app_secret: str
    tokens_issued: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    # errcodes to answer the next custom-send calls with, in order (0 = success)
    send_errors: list[int] = field(default_factory=list)
    # HTTP statuses to answer the next sends with before any errcode (502 = a gateway failure)
    send_statuses: list[int] = field(default_factory=list)
    send_delay: float = 0.0
    # What reached WeChat, in order: "push" for every accepted send; a test adds what WeChat's
    # callback side saw (e.g. "passive reply") to read the order of the two.
    arrivals: list[str] = field(default_factory=list)
    # HTTP statuses to answer the next token requests with (500 = WeChat's gateway failing)
    token_statuses: list[int] = field(default_factory=list)
    # seconds the token endpoint takes to answer (a slow or hanging WeChat)
    token_delay: float = 0.0
    token_requested: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    @property
    def valid_token(self) -> str | None:
        return self.tokens_issued[-1] if self.tokens_issued else None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self._token)
        app.router.add_post("/cgi-bin/message/custom/send", self._custom_send)
        app.router.add_post("/cgi-bin/message/template/send", self._template_send)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("appid") != self.app_id or q.get("secret") != self.app_secret:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        self.token_requested.set()
        if self.token_statuses:
            return web.Response(status=self.token_statuses.pop(0))
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        token = f"token-{next(self._counter)}"
        self.tokens_issued.append(token)  # a new token invalidates the previous one, as on WeChat
        return web.json_response({"access_token": token, "expires_in": 7200})

    async def _custom_send(self, request: web.Request) -> web.Response:
        """Customer-service messages; a test's subclass may hold or refuse them here."""
        return await self._accept(request)

    async def _accept(self, request: web.Request) -> web.Response:
        if request.query.get("access_token") != self.valid_token:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        if self.send_delay:
            await asyncio.sleep(self.send_delay)
        payload = json.loads(await request.read())
        if self.send_statuses:
            return web.Response(status=self.send_statuses.pop(0))
        errcode = self.send_errors.pop(0) if self.send_errors else 0
        if errcode:
            return web.json_response({"errcode": errcode, "errmsg": "refused by fake"})
        self.sent.append(payload)
        self.arrivals.append("push")
        self._arrived.set()
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _template_send(self, request: web.Request) -> web.Response:
        """Template messages land in `sent` too, marked with their `template_id`."""
        return await self._accept(request)

    async def wait_for_sent(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        async def _wait() -> None:
            while len(self.sent) < count:
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(_wait(), timeout)
        return self.sent


@dataclass
class HoldingWechatApi(FakeWechatApi):
    """Holds every push of the text `hold` until `release` is set; other calls go through."""

    hold: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0
    _holding: asyncio.Event = field(default_factory=asyncio.Event)

    async def _custom_send(self, request: web.Request) -> web.Response:
        if json.loads(await request.read()).get("text", {}).get("content") == self.hold:
            self.held += 1
            self._holding.set()
            await self.release.wait()
        return await super()._custom_send(request)

    async def wait_until_held(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._holding.wait(), timeout)
