"""Headers on every response: a Server header that names no versions, and HSTS over HTTPS.

`siyu serve` speaks plain HTTP; TLS is the job of whatever serves it over HTTPS (a load balancer
or reverse proxy). The app trusts no proxy's X-Forwarded-Proto, so it sends HSTS only on a request
that reached it over TLS itself; a proxy terminating TLS should add the header there.
"""

from __future__ import annotations

from aiohttp import web

SERVER = "siyu"
# One year, subdomains included: the browser never tries plain HTTP on this host again.
HSTS = "max-age=31536000; includeSubDomains"


async def set_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs before any response's headers are written."""
    response.headers["Server"] = SERVER
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
