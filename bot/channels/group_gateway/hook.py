"""`POST /group/hook`: a gateway's signed event in, the messages to post into the group now out.

Refused with nothing stored: a missing or stale timestamp or a wrong signature (401), a body over
`max_body_bytes` (413), a body that is not one event of the contract (400), too much waiting to
take it on (503: the gateway sends it again).
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from bot.app.http_body import read_limited
from bot.app.metrics import Metrics
from bot.channels.group_gateway.events import BadEvent, parse_event
from bot.channels.group_gateway.sender import CHANNEL
from bot.channels.group_gateway.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_matches
from bot.clock import Clock
from bot.groups.journal import JournalOverloaded
from bot.groups.room import GroupRoom
from bot.groups.settings import GroupGatewaySettings
from bot.pipeline.pipeline import PipelineOverloaded
from handlers.untrusted import BadInput, parse_json


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda value: json.dumps(value, ensure_ascii=False))


class GroupHook:
    def __init__(self, settings: GroupGatewaySettings, room: GroupRoom, metrics: Metrics, clock: Clock):
        self._settings = settings
        self._room = room
        self._metrics = metrics
        self._clock = clock
        self._latency = metrics.latency.labels(CHANNEL)

    def _refuse(self, status: int, reason: str) -> web.Response:
        self._metrics.rejected.labels(CHANNEL, reason).inc()
        return _json({"error": reason}, status)

    async def receive(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        if not timestamp.isdigit():
            return self._refuse(401, f"missing or bad {TIMESTAMP_HEADER}")
        if abs(time.time() - int(timestamp)) > self._settings.timestamp_tolerance_seconds:
            return self._refuse(401, "stale timestamp")
        body = await read_limited(request, self._settings.max_body_bytes)
        if body is None:
            return self._refuse(413, f"body larger than {self._settings.max_body_bytes} bytes")
        if not signature_matches(self._settings.secret, timestamp, body, request.headers.get(SIGNATURE_HEADER, "")):
            return self._refuse(401, "bad signature")
        try:
            event = parse_event(parse_json(body), self._clock.now())
        except BadInput as error:
            return self._refuse(400, f"malformed JSON: {error}" if not error.where else f"malformed event: {error}")
        except BadEvent as error:
            return self._refuse(400, str(error))
        if self._room.overloaded:
            return self._refuse(503, "overloaded")
        try:
            answer = await self._room.handle(event)
        except (JournalOverloaded, PipelineOverloaded):
            return self._refuse(503, "overloaded")
        self._latency.observe(time.monotonic() - started)
        return _json({"replies": [reply.as_json() for reply in answer.replies]})
