"""`POST /api/v1/events`: business events from the brand's systems, one object or an array.

Bearer-token authenticated; answers per event, so one bad event never loses the good ones.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from bot.app import keys
from bot.app.http_body import MAX_BODY_BYTES, read_limited
from flows.business_events import EventContext, ingest
from flows.reactions import NoReactions, Reactions
from handlers.untrusted import BadInput, parse_json

EVENTS_PATH = "/api/v1/events"
MAX_EVENTS = 1000

# The flow engine's reactions to applied events; without it events are applied and stored only.
EVENT_REACTIONS = web.AppKey("event_reactions", Reactions)


def add_event_routes(app: web.Application, path: str = EVENTS_PATH) -> None:
    app.router.add_post(path, post_events)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode())


async def post_events(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    if not _authorized(request, settings.api.token):
        return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="siyu"'})
    body = await read_limited(request)
    if body is None:
        return _error(413, f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        # Each event's values are checked with the event, so one bad event is refused alone.
        payload: Any = parse_json(body, check=False)
    except BadInput as error:
        return _error(400, f"body is not JSON: {error}")
    items = payload if isinstance(payload, list) else [payload] if isinstance(payload, dict) else None
    if items is None:
        return _error(400, "expected an event object or an array of events")
    if len(items) > MAX_EVENTS:
        return _error(413, f"at most {MAX_EVENTS} events per request, got {len(items)}")
    context = EventContext(lifecycle=settings.lifecycle, points=settings.points,
                           reactions=request.app.get(EVENT_REACTIONS) or NoReactions())
    results = await ingest(request.app[keys.SESSIONS], enumerate(items), request.app[keys.CLOCK].now(),
                           context)
    counts = {status: sum(r.status == status for r in results) for status in ("applied", "duplicate", "error")}
    # One event sent alone that is refused: 422 with the same body. A batch answers 200, its
    # results saying which were refused.
    status = 422 if isinstance(payload, dict) and counts["error"] else 200
    return web.json_response({"results": [r.as_json() for r in results], **counts}, status=status)
