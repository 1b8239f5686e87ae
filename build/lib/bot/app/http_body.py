"""Request bodies read with a hard size limit, so no client can make a worker buffer without bound."""

from __future__ import annotations

from aiohttp import web

# Every request body unless a route sets its own: aiohttp's form and JSON readers (the console)
# and `read_limited` (the business events API) refuse more.
MAX_BODY_BYTES = 1024 * 1024


async def read_limited(request: web.Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The body, or None when it is (or announces itself as) larger than `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = await request.content.read(limit + 1)
    return None if len(body) > limit else body
