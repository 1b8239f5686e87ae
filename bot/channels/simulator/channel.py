"""Simulator channel: a web chat page and a JSON API, so every flow can be tried without WeChat."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app.http_body import read_limited
from bot.app.http_security import SECURITY_HEADERS
from bot.app.metrics import Metrics
from bot.channels.base import Capabilities, DeliveryResult, OutboundMessage
from bot.clock import Clock, SystemClock
from bot.pipeline.pipeline import Pipeline
from handlers.messages import EventKind, Inbound, InboundKind
from handlers.untrusted import BadInput, id_in_range, parse_json, text_problem
from storage.models import Customer, Message

CHANNEL = "simulator"
MAX_BODY = 16 * 1024  # one chat message: far below the default for other bodies
MAX_TEXT = 2000
MAX_USER = 64
MAX_KEY = 128  # an event key becomes the customer's acquisition source (customers.source)
_EVENTS = {"subscribe": EventKind.SUBSCRIBE, "unsubscribe": EventKind.UNSUBSCRIBE,
           "scan": EventKind.SCAN, "click": EventKind.CLICK}


class BadRequest(ValueError):
    pass


def parse_simulated(data: Any, received_at: datetime) -> Inbound:
    """`{"user", "text"}`, or `{"user", "event": "subscribe", "key": "scene"}` for events."""
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object like {\"user\": \"alice\", \"text\": \"你好\"}")
    user = data.get("user")
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER or text_problem(user):
        raise BadRequest(f"'user' must be a non-empty string of at most {MAX_USER} characters")
    message_id = data.get("id")
    if message_id is not None and (not isinstance(message_id, str) or len(message_id) > 64):
        raise BadRequest("'id' must be a string of at most 64 characters")
    dedup = f"sim:{user}:{message_id}" if message_id else None
    event = data.get("event")
    if event is not None:
        if not isinstance(event, str) or event not in _EVENTS:
            raise BadRequest(f"'event' must be one of {', '.join(sorted(_EVENTS))}")
        key = data.get("key")
        if key is not None and (not isinstance(key, str) or len(key) > MAX_KEY):
            raise BadRequest(f"'key' must be a string of at most {MAX_KEY} characters")
        return Inbound(channel=CHANNEL, user_id=user, kind=InboundKind.EVENT, received_at=received_at,
                       dedup_key=dedup, event=_EVENTS[event], event_key=key,
                       text=(key or "") if event == "click" else "", payload={"event": event, "key": key})
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("'text' must be a non-empty string")
    if len(text) > MAX_TEXT:
        raise BadRequest(f"'text' is longer than {MAX_TEXT} characters")
    return Inbound(channel=CHANNEL, user_id=user, kind=InboundKind.TEXT, received_at=received_at,
                   dedup_key=dedup, text=text, payload={"text": text})


# The web chat gets every answer in its response, waits for it, and needs no window.
CAPABILITIES = Capabilities(passive_reply=True, passive_messages=None, reply_deadline_seconds=None,
                            push_window=None, template_fallback=False)


class SimulatorSender:
    """Pushed messages (staff replies, wait messages, touches) stay stored; the web chat polls for
    them."""

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    async def prepare(self) -> None:
        return None

    async def send(self, user_id: str, message: OutboundMessage) -> DeliveryResult:
        return DeliveryResult.delivered()


class SimulatorChannel:
    def __init__(self, pipeline: Pipeline, metrics: Metrics,
                 sessions: async_sessionmaker[AsyncSession] | None = None, clock: Clock | None = None):
        self._clock = clock or SystemClock()
        self._pipeline = pipeline
        self._metrics = metrics
        self._sessions = sessions

    async def messages(self, request: web.Request) -> web.Response:
        """`GET api/messages?user=…&after=ID`: pushed messages after ID (staff replies, wait notices).

        Without `after`, no messages but the cursor to poll from (`last_id`).
        """
        user = request.query.get("user", "")
        if not user or len(user) > MAX_USER or text_problem(user) or self._sessions is None:
            return _error(400, f"'user' is required: a name of at most {MAX_USER} characters")
        after = None
        if "after" in request.query:
            after = id_in_range(request.query["after"], minimum=0)
            if after is None:
                return _error(400, "'after' must be a message id (a whole number below 2^63)")
        query = (select(Message.id, Message.text, Message.payload)
                 .join(Customer, Customer.id == Message.customer_id)
                 .where(Customer.channel == CHANNEL, Customer.external_id == user))
        async with self._sessions() as session:
            if after is None:
                last = (await session.execute(query.order_by(Message.id.desc()).limit(1))).first()
                rows, last_id = [], (last[0] if last else 0)
            else:
                rows = list((await session.execute(
                    query.where(Message.id > after, Message.direction == "out", Message.delivery == "push")
                    .order_by(Message.id).limit(100)
                )).all())
                last_id = rows[-1][0] if rows else after
        return web.json_response(
            {"messages": [{"id": i, "text": t, "source": (p or {}).get("source")} for i, t, p in rows],
             "last_id": last_id},
            dumps=lambda value: json.dumps(value, ensure_ascii=False), headers=SECURITY_HEADERS,
        )

    async def page(self, request: web.Request, name: str = "simulator.html") -> web.Response:
        html = resources.files("bot").joinpath(f"static/{name}").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html", headers=SECURITY_HEADERS)

    async def script(self, request: web.Request, name: str = "simulator.js") -> web.Response:
        code = resources.files("bot").joinpath(f"static/{name}").read_text(encoding="utf-8")
        return web.Response(text=code, content_type="application/javascript", headers=SECURITY_HEADERS)

    async def post_message(self, request: web.Request) -> web.Response:
        raw = await read_limited(request, MAX_BODY)
        if raw is None:
            return _error(413, f"body larger than {MAX_BODY} bytes")
        try:
            inbound = parse_simulated(parse_json(raw or b"null"), self._clock.now())
        except BadInput as error:
            return _error(400, f"'{error.where}' {error.message}" if error.where else f"invalid JSON: {error}")
        except BadRequest as error:
            return _error(400, str(error))
        self._metrics.inbound.labels(CHANNEL, str(inbound.kind)).inc()
        outcome = await self._pipeline.handle(inbound)
        return web.json_response(
            {"replies": [reply.text for reply in outcome.replies], "duplicate": outcome.duplicate},
            dumps=lambda value: json.dumps(value, ensure_ascii=False), headers=SECURITY_HEADERS,
        )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=SECURITY_HEADERS,
                             dumps=lambda value: json.dumps(value, ensure_ascii=False))
