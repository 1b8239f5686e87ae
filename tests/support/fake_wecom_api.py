"""A local fake of WeCom's API for Customer Service: gettoken, sync_msg pages served by cursor from
a queue of items, send_msg / send_msg_on_event recorded (a repeated msgid is taken once, as WeCom
dedups it)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

_ids = itertools.count(1)


@dataclass
class FakeWecomApi:
    corp_id: str
    secret: str
    page_size: int = 1000
    items: list[dict[str, Any]] = field(default_factory=list)
    # inject "has_more with an empty page" before serving these cursors
    empty_pages_at: set[int] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)
    welcomes: list[dict[str, Any]] = field(default_factory=list)
    send_errors: list[int] = field(default_factory=list)
    sync_calls: list[dict[str, Any]] = field(default_factory=list)
    tokens_issued: list[str] = field(default_factory=list)
    server: TestServer | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _msgids: set[str] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/gettoken", self._token)
        app.router.add_post("/cgi-bin/kf/sync_msg", self._sync)
        app.router.add_post("/cgi-bin/kf/send_msg", self._send)
        app.router.add_post("/cgi-bin/kf/send_msg_on_event", self._send_on_event)
        return app

    def customer_text(self, user: str, content: str, open_kfid: str = "wkKF1", **extra: Any) -> dict[str, Any]:
        item = {"msgid": f"m{next(_ids)}", "open_kfid": open_kfid, "external_userid": user,
                "send_time": int(time.time()), "origin": 3, "msgtype": "text", "text": {"content": content}, **extra}
        self.items.append(item)
        return item

    def add(self, item: dict[str, Any]) -> dict[str, Any]:
        item = {"msgid": f"m{next(_ids)}", "send_time": int(time.time()), **item}
        self.items.append(item)
        return item

    async def _token(self, request: web.Request) -> web.Response:
        if request.query.get("corpid") != self.corp_id or request.query.get("corpsecret") != self.secret:
            return web.json_response({"errcode": 40001, "errmsg": "invalid secret"})
        token = f"wecom-token-{next(_ids)}"
        self.tokens_issued.append(token)
        return web.json_response({"errcode": 0, "access_token": token, "expires_in": 7200})

    def _token_ok(self, request: web.Request) -> bool:
        return bool(self.tokens_issued) and request.query.get("access_token") == self.tokens_issued[-1]

    async def _sync(self, request: web.Request) -> web.Response:
        if not self._token_ok(request):
            return web.json_response({"errcode": 40014, "errmsg": "invalid access_token"})
        body = json.loads(await request.read())
        self.sync_calls.append(body)
        start = int(body.get("cursor") or 0)
        if start in self.empty_pages_at:
            self.empty_pages_at.discard(start)
            return web.json_response({"errcode": 0, "next_cursor": str(start), "has_more": 1, "msg_list": []})
        limit = min(int(body.get("limit") or 1000), self.page_size)
        mine = [i for i in self.items if i.get("open_kfid", body["open_kfid"]) == body["open_kfid"]]
        page = mine[start:start + limit]
        end = start + len(page)
        return web.json_response({"errcode": 0, "next_cursor": str(end), "has_more": int(end < len(mine)),
                                  "msg_list": page})

    async def _send(self, request: web.Request) -> web.Response:
        if not self._token_ok(request):
            return web.json_response({"errcode": 40014, "errmsg": "invalid access_token"})
        body = json.loads(await request.read())
        if self.send_errors:
            code = self.send_errors.pop(0)
            if code:
                return web.json_response({"errcode": code, "errmsg": "refused by fake"})
        if body["msgid"] not in self._msgids:
            self._msgids.add(body["msgid"])
            self.sent.append(body)
            self._arrived.set()
        return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": body["msgid"]})

    async def _send_on_event(self, request: web.Request) -> web.Response:
        if not self._token_ok(request):
            return web.json_response({"errcode": 40014, "errmsg": "invalid access_token"})
        self.welcomes.append(json.loads(await request.read()))
        self._arrived.set()
        return web.json_response({"errcode": 0, "errmsg": "ok"})
