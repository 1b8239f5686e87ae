"""A few thousand generated hostile inputs against every public endpoint: none may get a 5xx, and
none that is refused may leave a row behind.

The generator is seeded (SIYU_FUZZ_SEED, printed with the figures), so a failure is reproduced by
running again with the same seed. Most inputs are a valid request with one part made hostile (a
field's value, type or nesting; a path id; a header), so they travel past the first check; the
rest are hostile as a whole (bytes that are not UTF-8, nesting 5,000 deep, entity bombs). Runs on
SQLite, and on PostgreSQL when SIYU_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import xmltodict
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from storage.models import BusinessEvent, Customer, Message, Order, PointsEntry
from tests.console.support import create_staff, login
from tests.security.support import AUTH, start
from tests.support.wechat import ACCOUNT, event_xml, sha1_signature, text_xml

SEED = int(os.environ.get("SIYU_FUZZ_SEED", "20261202"))
# Inputs per endpoint: a few thousand in all, a few tens of seconds on SQLite.
PER_ENDPOINT = {"wechat_mp plain": 500, "wechat_mp safe": 250, "wechat_mp verify": 120,
                "simulator post": 500, "simulator poll": 120, "events": 500, "console login": 60,
                "console json": 300, "healthz/metrics": 50}

TEXTS = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\ud83d", "²", "١٢٣", "\u202e反转", "😀" * 40,
         "]]>", "<xml>", "&amp;", "&#0;", "&#xd800;", "%00", "' OR 1=1 --", "${jndi:ldap://x}", "../../etc/passwd",
         "\r\n\r\nHTTP/1.1 200 OK", "\ufeff", "\uffff", "\x1b[31m", "null", "true", "9" * 400, "-0", "NaN"]
LONG = [64, 65, 128, 129, 191, 192, 256, 1025, 2001, 20_000, 60_000]
NUMBERS: list[Any] = [0, -1, 1, 2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**30, 1e308,
                      -1e308, 5e-324, 1.5, -0.0, True, False]
DEEP = [31, 32, 33, 100, 900, 5000]


class Hostile:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def text(self) -> str:
        r = self.rng.random()
        if r < 0.55:
            return self.rng.choice(TEXTS)
        if r < 0.8:
            return self.rng.choice("ao中\x00\ud800<&]") * self.rng.choice(LONG)
        return "".join(chr(self.rng.choice([self.rng.randrange(0x20, 0x7f), self.rng.randrange(0, 0x110000)]))
                       for _ in range(self.rng.randrange(1, 40)))

    def scalar(self) -> Any:
        r = self.rng.random()
        return self.text() if r < 0.5 else self.rng.choice(NUMBERS) if r < 0.9 else None

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth > 3 or r < 0.6:
            return self.scalar()
        if r < 0.75:
            return [self.value(depth + 1) for _ in range(self.rng.randrange(0, 4))]
        if r < 0.9:
            return {self.text()[:40]: self.value(depth + 1) for _ in range(self.rng.randrange(0, 4))}
        return nested_value(self.rng.choice(DEEP[:4]))

    def mutate(self, template: Any) -> Any:
        """The template with one part made hostile: a value, its type, a missing or extra key."""
        value = copy.deepcopy(template)
        paths = list(_paths(value))
        if not paths:
            return self.value()
        parent, key = self.rng.choice(paths)
        r = self.rng.random()
        if r < 0.7:
            parent[key] = self.value()
        elif r < 0.8 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[self.text()[:40]] = self.value()
        else:
            parent[key] = nested_value(self.rng.choice(DEEP[:4]))
        return value

    def json_body(self, template: Any) -> bytes:
        r = self.rng.random()
        if r < 0.8:
            return dumps(self.mutate(template), ascii_only=self.rng.random() < 0.5)
        if r < 0.85:
            depth = self.rng.choice(DEEP)
            return (b"[" * depth + b"]" * depth) if self.rng.random() < 0.5 else (b'{"a":' * depth + b"1" + b"}" * depth)
        if r < 0.9:
            return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(0, 64)))
        if r < 0.95:
            return self.rng.choice([b"", b"null", b"NaN", b"[NaN]", b'{"user": Infinity}', b"\xef\xbb\xbf{}",
                                    b'{"user": "a", "text": "\xed\xa0\x80"}', b'{"a": 1', b"1" * 5000, b'"\\ud800"'])
        return dumps(self.value(), ascii_only=False)


def _paths(value: Any) -> list[tuple[Any, Any]]:
    found: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else []
        for key, child in pairs:
            found.append((item, key))
            stack.append(child)
    return found


def nested_value(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def header_text(value: str) -> str:
    """A hostile value as a header can carry it: its UTF-8 bytes, less control characters."""
    raw = value.encode("utf-8", "replace").decode("latin-1")
    return "".join(c for c in raw if c >= " " and c != "\x7f")[:4000]


def dumps(value: Any, ascii_only: bool) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=ascii_only)
    except (ValueError, RecursionError):
        text = "[" * 2000 + "]" * 2000
    return text.encode("utf-8", "surrogatepass")  # lone surrogates go out as the bytes they would be


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class Tally:
    tried: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    server_errors: list[tuple[str, int, str, str]] = field(default_factory=list)
    stored_when_refused: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"hostile inputs (seed {SEED}): endpoint, tried, refused with 4xx, 5xx"]
        for endpoint in PER_ENDPOINT:
            fives = sum(1 for e, *_ in self.server_errors if e == endpoint)
            lines.append(f"  {endpoint:18} {self.tried[endpoint]:5} {self.refused[endpoint]:5} {fives:3}")
        lines.append(f"  {'total':18} {sum(self.tried.values()):5} {sum(self.refused.values()):5} "
                     f"{len(self.server_errors):3}")
        return "\n".join(lines)


class Rows:
    """How many rows a refused request could have left behind, read in one statement."""

    def __init__(self, url: str):
        self.engine = create_async_engine(url, poolclass=NullPool)
        self.query = select(*(select(func.count()).select_from(model).scalar_subquery()
                              for model in (Message, Customer, BusinessEvent, Order, PointsEntry)))

    async def count(self) -> tuple[int, ...]:
        async with self.engine.connect() as connection:
            return tuple((await connection.execute(self.query)).one())


@pytest.mark.parametrize("backend_url", ["sqlite", "postgresql"], indirect=True)
async def test_hostile_inputs_get_no_5xx_and_leave_nothing_when_refused(aiohttp_client, example_settings,
                                                                        backend_url, fake_api, capsys):
    rng = random.Random(SEED)
    hostile = Hostile(rng)
    tally = Tally()
    rows = Rows(backend_url)
    plain = await start(aiohttp_client, example_settings, backend_url, fake_api)
    client = plain.client
    safe = await start(aiohttp_client, example_settings, backend_url, fake_api, mode="safe")
    safe.client = client  # one app; the safe-mode sender only signs and encrypts differently

    async def send(endpoint: str, method: str, path: str, *, check_rows: bool = True, **kwargs: Any) -> int:
        before = await rows.count() if check_rows else None
        response = await client.request(method, path, allow_redirects=False, **kwargs)
        body = await response.read()
        tally.tried[endpoint] += 1
        if response.status >= 500:
            tally.server_errors.append((endpoint, response.status, body[:200].decode(errors="replace"),
                                        repr(kwargs)[:300]))
        elif 400 <= response.status < 500:
            tally.refused[endpoint] += 1
            if before is not None and await rows.count() != before:
                tally.stored_when_refused.append((endpoint, repr(kwargs)[:300]))
        return response.status

    try:
        await _wechat_plain(plain, hostile, send)
        await _wechat_safe(safe, hostile, send)
        await _wechat_verify(plain, hostile, send)
        await _simulator(hostile, send)
        await _events(hostile, send)
        await _console(client, backend_url, hostile, send)
        await _health(hostile, send)
    finally:
        await rows.engine.dispose()
    with capsys.disabled():
        print("\n" + tally.report())
    assert tally.server_errors == [], tally.server_errors[:5]
    assert tally.stored_when_refused == [], tally.stored_when_refused[:5]
    assert sum(tally.tried.values()) >= 2000


# ---- per endpoint -------------------------------------------------------------------------------


def _xml_text(hostile: Hostile, value: str) -> str:
    """A hostile value placed in XML the ways a sender might: CDATA, plain text, or markup."""
    r = hostile.rng.random()
    if r < 0.5:
        return f"<![CDATA[{value}]]>"
    if r < 0.8:
        return value
    return f"<a>{value}</a>" if r < 0.9 else f"<![CDATA[{value}]]><![CDATA[x]]>"


FIELDS = ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "Event", "EventKey",
          "Latitude", "PicUrl", "MediaId", "Recognition", "Ticket"]
WHOLE_XML = [
    "", "<xml>", "</xml>", "<xml></xml>", "not xml at all", "<?xml version='1.0'?><xml/>",
    ('<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
     '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
     '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">]><xml><FromUserName>&e;</FromUserName>'
     "<MsgType>text</MsgType><Content>&e;</Content></xml>"),  # an entity bomb
    ('<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><FromUserName>&x;</FromUserName>'
     "<MsgType>text</MsgType></xml>"),  # an external entity
    "<xml>" + "<a>" * 5000 + "</a>" * 5000 + "</xml>",
    "<xml><FromUserName>o</FromUserName><FromUserName>p</FromUserName><MsgType>text</MsgType></xml>",
    '<xml a="1"><FromUserName x="y">o</FromUserName><MsgType>text</MsgType><Content>hi</Content></xml>',
]


def _hostile_xml(hostile: Hostile) -> str:
    rng = hostile.rng
    r = rng.random()
    if r < 0.1:
        return rng.choice(WHOLE_XML)
    openid = f"fuzz-{rng.randrange(10**6)}"
    xml = text_xml(openid, "你好") if r < 0.6 else event_xml(openid, rng.choice(
        ["subscribe", "unsubscribe", "SCAN", "CLICK", "VIEW", "LOCATION", "TEMPLATESENDJOBFINISH", "nope"]),
        {"EventKey": "qrscene_shop"})
    name = rng.choice(FIELDS)
    value = _xml_text(hostile, hostile.text() if rng.random() < 0.8 else str(rng.choice(NUMBERS)))
    if f"<{name}>" in xml:
        start, end = xml.index(f"<{name}>") + len(name) + 2, xml.index(f"</{name}>")
        return xml[:start] + value + xml[end:]
    return xml.replace("</xml>", f"<{name}>{value}</{name}></xml>")


async def _wechat_plain(server: Any, hostile: Hostile, send: Any) -> None:
    for _ in range(PER_ENDPOINT["wechat_mp plain"]):
        xml = _hostile_xml(hostile)
        await send("wechat_mp plain", "POST", "/wechat/mp", params=server.query(),
                   data=xml.encode("utf-8", "surrogatepass"), headers={"Content-Type": "text/xml"})


async def _wechat_safe(server: Any, hostile: Hostile, send: Any) -> None:
    rng = hostile.rng
    for _ in range(PER_ENDPOINT["wechat_mp safe"]):
        xml = _hostile_xml(hostile).encode("utf-8", "replace").decode("utf-8")  # what can be encrypted
        if rng.random() < 0.8:  # hostile XML, encrypted and signed as WeChat would
            encrypted = xmltodict.parse(server.crypto.encrypt_message(xml, "1320562132"))["xml"]["Encrypt"]
            body = f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        else:  # a hostile envelope: the ciphertext itself, or the envelope's XML
            encrypted = rng.choice(["", "=", "QUJD", "A" * 4096, "QUJDREVGR0hJSktMTU5PUA==", hostile.text()])
            body = rng.choice([f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>",
                               f"<xml><Encrypt><a>{encrypted}</a></Encrypt></xml>", _hostile_xml(hostile)])
        query = server.query(encrypt=encrypted) if rng.random() < 0.9 else {**server.query(), "encrypt_type": "aes"}
        await send("wechat_mp safe", "POST", "/wechat/mp", params=query,
                   data=body.encode("utf-8", "surrogatepass"), headers={"Content-Type": "text/xml"})


async def _wechat_verify(server: Any, hostile: Hostile, send: Any) -> None:
    rng = hostile.rng
    for _ in range(PER_ENDPOINT["wechat_mp verify"]):
        query = {**server.query(), "echostr": "8964123"}
        name = rng.choice(["timestamp", "nonce", "signature", "echostr", "openid", "encrypt_type", "msg_signature"])
        query[name] = hostile.text()
        if name in ("nonce", "echostr") and rng.random() < 0.7:  # a valid signature over a hostile nonce
            query[name] = query[name].encode("utf-8", "replace").decode()  # as the server will read it
            query["signature"] = sha1_signature(server.token, query["timestamp"], query["nonce"])
        path = "/wechat/mp?" + "&".join(f"{quote(k)}={quote(v, errors='surrogatepass')}" for k, v in query.items())
        await send("wechat_mp verify", rng.choice(["GET", "POST", "PUT"]), path)


async def _simulator(hostile: Hostile, send: Any) -> None:
    rng = hostile.rng
    templates = [{"user": "fuzz", "text": "你好"}, {"user": "fuzz", "text": "几点开门", "id": "m-1"},
                 {"user": "fuzz", "event": "subscribe", "key": "live_stream"}, {"user": "fuzz", "event": "click"}]
    for n in range(PER_ENDPOINT["simulator post"]):
        template = copy.deepcopy(rng.choice(templates))
        template["user"] = f"fuzz-{n}"
        await send("simulator post", "POST", "/simulator/api/messages", data=hostile.json_body(template))
    for _ in range(PER_ENDPOINT["simulator poll"]):
        params = {"user": rng.choice(["fuzz-1", hostile.text()]), "after": rng.choice(
            [hostile.text(), str(rng.choice(NUMBERS)), "0", str(2**63)])}
        path = "/simulator/api/messages?" + "&".join(f"{k}={quote(v, errors='surrogatepass')}"
                                                      for k, v in params.items())
        await send("simulator poll", "GET", path)


def _valid_event(rng: random.Random, n: int) -> dict[str, Any]:
    kind, data = rng.choice([
        ("order_paid", {"order_id": f"F{n}", "amount": "19.90", "items": [{"sku": "TEE-01", "qty": 1}]}),
        ("order_delivered", {"order_id": f"F{n}"}), ("order_refunded", {"order_id": f"F{n}", "amount": "1.00"}),
        ("cart_abandoned", {"items": [{"sku": "TEE-01"}], "amount": "9.00"}),
        ("points_changed", {"delta": 5, "reason": "fuzz"}),
        ("profile_updated", {"nickname": "阿福", "tags": ["vip"], "attributes": {"size": "L"},
                             "timezone": "Asia/Shanghai", "phone": "13800138000"}),
        ("store_visit", {"store_id": "SH-01"}),
    ])
    return {"id": f"fuzz-{n}", "type": kind, "occurred_at": "2026-11-23T10:00:00+08:00",
            "customer": {"openid": f"o-fuzz-{n % 50}", "unionid": None, "phone": None}, "data": data}


async def _events(hostile: Hostile, send: Any) -> None:
    rng = hostile.rng
    for n in range(PER_ENDPOINT["events"]):
        batch: Any = [_valid_event(rng, n * 10 + i) for i in range(rng.randrange(1, 4))]
        template = batch[0] if rng.random() < 0.5 else batch
        headers = dict(AUTH)
        if rng.random() < 0.05:
            headers["Authorization"] = "Bearer " + header_text(hostile.text())
        # Refused as a whole (4xx) leaves nothing; a batch answers 200 with per-event errors.
        await send("events", "POST", "/api/v1/events", data=hostile.json_body(template), headers=headers)


async def _console(client: Any, url: str, hostile: Hostile, send: Any) -> None:
    rng = hostile.rng
    await create_staff(url, "fuzz-admin", "admin")
    await create_staff(url, "fuzz-login")  # slowed down by the wrong passwords below, as it should be
    for _ in range(PER_ENDPOINT["console login"]):
        page = await (await client.get("/console/login")).text()
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"name": rng.choice(["fuzz-login", hostile.text()]), "password": hostile.text(),
                "csrf": csrf if rng.random() < 0.8 else hostile.text()}
        body = "&".join(f"{k}={quote(v, errors='surrogatepass')}" for k, v in form.items())
        await send("console login", "POST", "/console/login", check_rows=False, data=body,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    # The wrong passwords came from this client's address, which now waits (the login throttle):
    # the admin logs in from another machine, and this client takes over the session cookie.
    async with aiohttp.ClientSession(base_url=str(client.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True),
                                     connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as admin:
        status, _ = await login(admin, "fuzz-admin")
        assert status == 303
        client.session.cookie_jar.update_cookies({cookie.key: cookie.value for cookie in admin.cookie_jar},
                                                 response_url=client.make_url("/"))
    csrf = (await (await client.get("/console/api/me")).json())["csrf"]
    # A chat the admin holds, so replies reach the reply itself (a simulated customer: no window).
    await client.post("/simulator/api/messages", json={"user": "fuzz-escalated", "text": "转人工"})
    queued = (await (await client.get("/console/api/queue")).json())["queued"]
    held = queued[0]["id"]
    assert (await client.post(f"/console/api/conversations/{held}/claim", headers={"X-CSRF-Token": csrf})).status == 200
    for _ in range(PER_ENDPOINT["console json"]):
        r = rng.random()
        if r < 0.5:
            await send("console json", "POST", f"/console/api/conversations/{held}/reply",
                       data=hostile.json_body({"text": "您好"}), headers={"X-CSRF-Token": csrf})
        elif r < 0.8:
            conversation = rng.choice([hostile.text(), str(rng.choice(NUMBERS)), str(2**63), "9" * 40, "0"])
            action = rng.choice(["", "/claim", "/reply", "/hand-back", "/close"])
            await send("console json", "GET" if not action else "POST",
                       f"/console/api/conversations/{quote(conversation, errors='surrogatepass')}{action}",
                       data=hostile.json_body({"text": "hi"}), headers={"X-CSRF-Token": csrf})
        else:
            path = rng.choice(["/console/api/canned?q=", "/console/api/queue?x=", "/console/api/me?",
                               "/console/api/conversations?limit=", "/console/api/staff?"])
            await send("console json", "GET", path + quote(hostile.text(), errors="surrogatepass"),
                       headers={"X-CSRF-Token": header_text(hostile.text())})


async def _health(hostile: Hostile, send: Any) -> None:
    rng = hostile.rng
    for _ in range(PER_ENDPOINT["healthz/metrics"]):
        path = rng.choice(["/healthz", "/metrics"]) + "?" + quote(hostile.text(), errors="surrogatepass")
        await send("healthz/metrics", rng.choice(["GET", "POST", "DELETE"]), path, data=hostile.json_body({}))

