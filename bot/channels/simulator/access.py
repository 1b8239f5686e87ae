"""Who may use the simulator. It lets anyone write as any simulated customer and read the bot's
answers to them, so by default it answers only this machine (the first README command), and
`siyu serve` refuses to listen beyond loopback with it on. With `allow_remote = true` it may be
reached from anywhere, by logged-in console users only.
"""

from __future__ import annotations

import ipaddress
import json

from aiohttp import web

from bot.app import keys
from bot.app.http_security import SECURITY_HEADERS
from bot.config.settings import Settings
from bot.console import auth
from bot.console.routes import SESSION_COOKIE

# A request through a reverse proxy comes from loopback but is not from this machine.
_FORWARDED = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost, or all interfaces (""): not only this machine


def exposure_problem(settings: Settings, host: str) -> str | None:
    """Why `siyu serve` must not listen on `host` with this simulator, or None."""
    simulator = settings.channels.simulator
    if not simulator.enabled:
        return None
    if simulator.allow_remote:
        if not settings.staff.enabled:
            return ("[channels.simulator] allow_remote = true lets console users in, but the console is off: "
                    "set [staff] enabled = true, or allow_remote = false")
        return None
    if is_loopback(host):
        return None
    return (f"the simulator is on and {host or 'every interface'} is not a loopback address: anyone who reaches "
            "it could write as any customer and read the bot's answers. Set [channels.simulator] "
            "enabled = false, or allow_remote = true to let only logged-in console users use it "
            "(or listen on 127.0.0.1)")


async def refusal(request: web.Request) -> web.StreamResponse | None:
    """None when this request may use the simulator; otherwise the answer to give instead."""
    settings: Settings = request.app[keys.SETTINGS]
    simulator = settings.channels.simulator
    if not simulator.allow_remote:
        if is_loopback(request.remote or "") and not any(name in request.headers for name in _FORWARDED):
            return None
        return _error(403, "模拟器只对本机开放（如需远程使用，请设置 [channels.simulator] allow_remote = true 并登录控制台）")
    async with request.app[keys.SESSIONS]() as session:
        identity = await auth.identify(session, request.cookies.get(SESSION_COOKIE), request.app[keys.CLOCK].now())
    if identity is None:
        if request.method == "GET" and not request.path.startswith(simulator.path.rstrip("/") + "/api/"):
            raise web.HTTPFound(settings.staff.path + "login")
        return _error(401, f"请先登录控制台（{settings.staff.path}）再使用模拟器")
    if request.method == "POST" and request.content_type != "application/json":
        # A cross-site form cannot send JSON without the browser asking first (and being refused).
        return _error(415, "请求须为 application/json")
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=SECURITY_HEADERS,
                             dumps=lambda value: json.dumps(value, ensure_ascii=False))
