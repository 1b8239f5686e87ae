"""The console's HTTP side: login, the live queue (server-sent events), chat view, reply, hand back.

Every route but the login page needs a logged-in session; every change also needs the session's
CSRF token in the `X-CSRF-Token` header. Errors are JSON `{"error": "…"}` in Chinese.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import posixpath
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from sqlalchemy import select

from bot.app import keys
from bot.app.http_security import SECURITY_HEADERS
from bot.channels.base import Text
from bot.config.settings import Settings
from bot.console import auth, views
from bot.console import groups as console_groups
from bot.console.auth import Identity, Role
from bot.console.hashing import HasherBusy, PasswordChecks
from bot.console.hub import ConsoleHub
from bot.console.settings import StaffSettings
from bot.outbox.outbox import Push
from flows import handoff
from flows.handoff import State, TransitionError
from handlers.untrusted import BadInput, id_in_range, parse_json, text_problem
from storage.models import Conversation, Customer, Message
from storage.outgoing import Outgoing, append_outgoing
from storage.privacy import mask

log = logging.getLogger(__name__)

CONSOLE_HUB = web.AppKey("console_hub", ConsoleHub)
PASSWORD_CHECKS = web.AppKey("password_checks", PasswordChecks)
SESSION_COOKIE = "siyu_console"
LOGIN_COOKIE = "siyu_console_login"
MAX_REPLY = 2000
MAX_LOGIN_FIELD = 1024  # no account has a longer name (64) or password; hashing one only costs time
# A live stream re-checks the database this often, to see other processes' changes.
POLL_SECONDS = 2.0
HEARTBEAT_SECONDS = 15.0
Handler = Callable[[web.Request, Identity], Awaitable[web.StreamResponse]]


def add_console_routes(app: web.Application, settings: StaffSettings) -> None:
    """Routes are fixed before start-up; they reach live objects through `request.app`."""
    app[CONSOLE_HUB] = ConsoleHub()
    app[PASSWORD_CHECKS] = PasswordChecks(app[keys.METRICS].registry)
    app.on_shutdown.append(_shut_streams)
    app.on_cleanup.append(_close_hasher)
    base = settings.path.rstrip("/")
    r = app.router
    r.add_get(base, _redirect_to_console)
    r.add_get(base + "/login", login_page)
    r.add_post(base + "/login", login_submit)
    r.add_post(base + "/logout", requires(Role.STAFF)(logout))
    r.add_get(base + "/", requires(Role.STAFF)(console_page))
    r.add_get(base + "/console.js", requires(Role.STAFF)(console_script))
    r.add_get(base + "/api/me", requires(Role.STAFF)(me))
    r.add_get(base + "/api/queue", requires(Role.STAFF)(queue))
    r.add_get(base + "/api/events", requires(Role.STAFF)(events))
    r.add_get(base + "/api/canned", requires(Role.STAFF)(canned))
    r.add_get(base + "/api/conversations", requires(Role.OPERATOR)(all_conversations))
    r.add_get(base + "/api/conversations/{id:[0-9]+}", requires(Role.STAFF)(conversation))
    r.add_post(base + "/api/conversations/{id:[0-9]+}/claim", requires(Role.STAFF)(claim))
    r.add_post(base + "/api/conversations/{id:[0-9]+}/reply", requires(Role.STAFF)(reply))
    r.add_post(base + "/api/conversations/{id:[0-9]+}/hand-back", requires(Role.STAFF)(hand_back))
    r.add_post(base + "/api/conversations/{id:[0-9]+}/close", requires(Role.STAFF)(close))
    r.add_get(base + "/api/staff", requires(Role.ADMIN)(staff_accounts))
    r.add_get(base + "/groups", requires(Role.OPERATOR)(groups_page))
    r.add_get(base + "/groups.js", requires(Role.OPERATOR)(groups_script))
    r.add_get(base + "/api/groups", requires(Role.OPERATOR)(group_list))
    r.add_get(base + "/api/groups/{id:\\d+}", requires(Role.OPERATOR)(group))


# --- plumbing ---------------------------------------------------------------------------------

def _settings(request: web.Request) -> StaffSettings:
    return request.app[keys.SETTINGS].staff


def _base(request: web.Request) -> str:
    return _settings(request).path


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=SECURITY_HEADERS,
                             dumps=lambda value: json.dumps(value, ensure_ascii=False))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _conversation_id(request: web.Request) -> int | None:
    """The conversation id in the path, or None when no conversation can have it (beyond 64 bits)."""
    return id_in_range(request.match_info["id"])


def requires(role: Role) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Anonymous → 401 (pages: to the login page); too low a role → 403; a change without the
    session's CSRF token → 403."""

    def wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            now = request.app[keys.CLOCK].now()
            async with request.app[keys.SESSIONS]() as session:
                identity = await auth.identify(session, request.cookies.get(SESSION_COOKIE), now)
            if identity is None:
                if request.method == "GET" and not request.path.startswith(_base(request) + "api/"):
                    raise web.HTTPFound(_base(request) + "login")
                return _error(401, "请先登录")
            if not auth.at_least(identity.role, role):
                return _error(403, "没有权限")
            if request.method not in ("GET", "HEAD") and not auth.csrf_matches(
                    identity.csrf_token, request.headers.get("X-CSRF-Token")):
                return _error(403, "请求校验失败（CSRF），请刷新页面后重试")
            return await handler(request, identity)

        return guarded

    return wrap


def session_cookie_path(settings: Settings) -> str:
    """Where the browser sends the login: the console's path, and when the simulator takes console
    logins ([channels.simulator] allow_remote) the path both share."""
    simulator = settings.channels.simulator
    if not (simulator.enabled and simulator.allow_remote):
        return settings.staff.path
    return posixpath.commonpath([settings.staff.path, simulator.path.rstrip("/") + "/"]).rstrip("/") + "/"


def _cookie(response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int,
            path: str | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=path or _base(request), httponly=True, samesite="Strict",
                        secure=_settings(request).cookie_secure)


def _static(name: str) -> str:
    return resources.files("bot").joinpath(f"static/{name}").read_text(encoding="utf-8")


async def _redirect_to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(_base(request))


async def _close_hasher(app: web.Application) -> None:
    app[PASSWORD_CHECKS].close()


async def _shut_streams(app: web.Application) -> None:
    await app[CONSOLE_HUB].shut()


# --- login ------------------------------------------------------------------------------------

async def login_page(request: web.Request, message: str = "", status: int = 200) -> web.Response:
    async with request.app[keys.SESSIONS]() as session:
        identity = await auth.identify(session, request.cookies.get(SESSION_COOKIE),
                                       request.app[keys.CLOCK].now())
    if identity is not None and not message:
        raise web.HTTPFound(_base(request))
    # Login CSRF: the form carries the same random value as a strict cookie (double submit).
    token = secrets.token_urlsafe(32)
    page = (_static("console-login.html")
            .replace("{{csrf}}", token)
            .replace("{{action}}", html.escape(_base(request) + "login"))
            .replace("{{message}}", html.escape(message)))
    response = web.Response(text=page, content_type="text/html", status=status, headers=SECURITY_HEADERS)
    _cookie(response, request, LOGIN_COOKIE, token, 3600)
    return response


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not auth.csrf_matches(request.cookies.get(LOGIN_COOKIE, ""), str(form.get("csrf", ""))):
        return await login_page(request, "页面已过期，请重新登录。", status=403)
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    if (len(name) > MAX_LOGIN_FIELD or len(password) > MAX_LOGIN_FIELD or text_problem(name)
            or text_problem(password)):
        return await login_page(request, "用户名或密码格式不正确。", status=400)
    now = request.app[keys.CLOCK].now()
    try:
        token, identity = await auth.login(request.app[keys.SESSIONS], request.app[PASSWORD_CHECKS], name, password,
                                           request.remote, now, _settings(request))
    except auth.LoginRefused as refused:
        log.info("console login refused for %s from %s", mask(name), request.remote)
        if refused.retry_after is None:
            return await login_page(request, refused.message, status=401)
        page = await login_page(request, refused.message, status=429)
        page.headers["Retry-After"] = str(refused.retry_after)
        return page
    except HasherBusy:
        log.warning("console login refused: too many password checks waiting")
        return await login_page(request, "登录繁忙，请稍后再试。", status=503)
    log.info("console login: %s (%s)", identity.name, identity.role)
    response = web.Response(status=303, headers={"Location": _base(request), **SECURITY_HEADERS})
    _cookie(response, request, SESSION_COOKIE, token, _settings(request).session_hours * 3600,
            session_cookie_path(request.app[keys.SETTINGS]))
    response.del_cookie(LOGIN_COOKIE, path=_base(request))
    return response


async def logout(request: web.Request, identity: Identity) -> web.StreamResponse:
    async with request.app[keys.SESSIONS]() as session, session.begin():
        await auth.logout(session, request.cookies.get(SESSION_COOKIE, ""))
    response = _json({"ok": True})
    response.del_cookie(SESSION_COOKIE, path=session_cookie_path(request.app[keys.SETTINGS]))
    return response


# --- pages ------------------------------------------------------------------------------------

async def console_page(request: web.Request, identity: Identity) -> web.StreamResponse:
    return web.Response(text=_static("console.html"), content_type="text/html", headers=SECURITY_HEADERS)


async def console_script(request: web.Request, identity: Identity) -> web.StreamResponse:
    return web.Response(text=_static("console.js"), content_type="application/javascript",
                        headers=SECURITY_HEADERS)


async def groups_page(request: web.Request, identity: Identity) -> web.StreamResponse:
    return web.Response(text=_static("groups.html"), content_type="text/html", headers=SECURITY_HEADERS)


async def groups_script(request: web.Request, identity: Identity) -> web.StreamResponse:
    return web.Response(text=_static("groups.js"), content_type="application/javascript", headers=SECURITY_HEADERS)


async def group_list(request: web.Request, identity: Identity) -> web.StreamResponse:
    return _json(await console_groups.groups(request))


async def group(request: web.Request, identity: Identity) -> web.StreamResponse:
    found = await console_groups.group(request)
    return _error(404, "群不存在") if found is None else _json(found)


async def me(request: web.Request, identity: Identity) -> web.StreamResponse:
    return _json({"id": identity.staff_id, "name": identity.name, "role": identity.role,
                  "sees_all": identity.sees_all, "csrf": identity.csrf_token})


async def queue(request: web.Request, identity: Identity) -> web.StreamResponse:
    async with request.app[keys.SESSIONS]() as session:
        return _json(await views.queue(session, identity))


async def all_conversations(request: web.Request, identity: Identity) -> web.StreamResponse:
    async with request.app[keys.SESSIONS]() as session:
        return _json({"conversations": await views.recent(session)})


async def staff_accounts(request: web.Request, identity: Identity) -> web.StreamResponse:
    async with request.app[keys.SESSIONS]() as session:
        return _json({"staff": await views.staff_list(session)})


async def canned(request: web.Request, identity: Identity) -> web.StreamResponse:
    query = request.query.get("q", "").strip().lstrip("/").lower()
    found = [c for c in _settings(request).canned_replies
             if not query or c.code.lower().startswith(query) or query in c.title.lower() or query in c.text.lower()]
    found.sort(key=lambda c: (not c.code.lower().startswith(query), c.code))
    return _json({"canned": [{"code": c.code, "title": c.title, "text": c.text} for c in found]})


async def conversation(request: web.Request, identity: Identity) -> web.StreamResponse:
    conversation_id = _conversation_id(request)
    if conversation_id is None:
        return _error(404, "会话不存在")
    async with request.app[keys.SESSIONS]() as session:
        found = await session.get(Conversation, conversation_id)
        if found is None:
            return _error(404, "会话不存在")
        if not views.may_view(identity, found):
            return _error(403, "该会话由其他客服接待")
        return _json(await views.chat(session, found, identity))


# --- live queue -------------------------------------------------------------------------------

async def events(request: web.Request, identity: Identity) -> web.StreamResponse:
    """Server-sent events: `changed` whenever the queue or a chat may look different."""
    hub = request.app[CONSOLE_HUB]
    sessions = request.app[keys.SESSIONS]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    seen = hub.version
    async with sessions() as session:
        marker = await views.change_marker(session)
    last_write = loop.time()
    try:
        await response.write(b"retry: 2000\nevent: changed\ndata: {}\n\n")
        while not hub.closing:
            version = await hub.wait(seen, POLL_SECONDS)
            async with sessions() as session:
                current = await views.change_marker(session)
                if await auth.identify(session, request.cookies.get(SESSION_COOKIE),
                                       request.app[keys.CLOCK].now()) is None:
                    break  # logged out or expired
            if version != seen or current != marker:
                seen, marker = version, current
                await response.write(f"event: changed\ndata: {json.dumps({'version': version})}\n\n".encode())
                last_write = loop.time()
            elif loop.time() - last_write > HEARTBEAT_SECONDS:
                await response.write(b": keep-alive\n\n")
                last_write = loop.time()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


# --- actions ----------------------------------------------------------------------------------

async def _transition(request: web.Request, identity: Identity,
                      change: Callable[..., Awaitable[Conversation]], check_view: bool = True,
                      **kwargs: Any) -> web.StreamResponse:
    conversation_id = _conversation_id(request)
    if conversation_id is None:
        return _error(404, "会话不存在")
    now = request.app[keys.CLOCK].now()
    try:
        async with request.app[keys.SESSIONS]() as session, session.begin():
            found = await session.get(Conversation, conversation_id)
            if found is None:
                return _error(404, "会话不存在")
            if check_view and not views.may_view(identity, found):
                return _error(403, "该会话由其他客服接待")
            changed = await change(session, conversation_id, identity.staff_id, now, **kwargs)
            state = changed.state
    except TransitionError as error:
        return _error(409, error.message)
    await request.app[CONSOLE_HUB].notify()
    return _json({"id": conversation_id, "state": state})


async def claim(request: web.Request, identity: Identity) -> web.StreamResponse:
    # Anyone may try to claim; the state machine says who won, and tells the others (409).
    return await _transition(request, identity, handoff.claim, check_view=False)


async def hand_back(request: web.Request, identity: Identity) -> web.StreamResponse:
    return await _transition(request, identity, handoff.hand_back, any_assignee=identity.sees_all)


async def close(request: web.Request, identity: Identity) -> web.StreamResponse:
    return await _transition(request, identity, handoff.close, any_assignee=identity.sees_all)


async def reply(request: web.Request, identity: Identity) -> web.StreamResponse:
    """Store the staff member's message, then push it through the channel; report the outcome."""
    conversation_id = _conversation_id(request)
    if conversation_id is None:
        return _error(404, "会话不存在")
    try:
        body = parse_json(await request.read())
    except BadInput as error:
        return _error(400, "消息包含无法保存的字符" if error.where else "请求格式错误")
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return _error(400, "消息不能为空")
    if len(text) > MAX_REPLY:
        return _error(400, f"消息不能超过 {MAX_REPLY} 字")
    text = text.strip()
    now = request.app[keys.CLOCK].now()
    async with request.app[keys.SESSIONS]() as session, session.begin():
        found = await session.get(Conversation, conversation_id)
        if found is None:
            return _error(404, "会话不存在")
        # The customer's row lock orders this message with the customer's own (seq numbers).
        customer = (await session.execute(
            select(Customer).where(Customer.id == found.customer_id).with_for_update()
        )).scalar_one()
        conversation = (await session.execute(
            select(Conversation).where(Conversation.id == conversation_id)
            .execution_options(populate_existing=True)
        )).scalar_one()
        if conversation.state != State.STAFF or conversation.assigned_staff_id != identity.staff_id:
            return _error(409, "请先接入该会话再回复")
        (message_id,) = await append_outgoing(session, [Outgoing(
            conversation_id=conversation.id, customer_id=customer.id, channel=customer.channel, text=text,
            created_at=now, payload={"source": "staff", "staff_id": identity.staff_id})], with_ids=True)
        handoff.record_staff_reply(conversation, now)
        channel, user_id = customer.channel, customer.external_id
    (pushed,) = await request.app[keys.OUTBOX].deliver(channel, user_id, [Push(message_id, Text(text))])
    async with request.app[keys.SESSIONS]() as session:
        stored = await session.get(Message, message_id)
        assert stored is not None
        view = views.message_view(stored, {identity.staff_id: identity.name})
    await request.app[CONSOLE_HUB].notify()
    status = 200 if pushed.state != "failed" else 502
    return _json({"message": view, "delivery": pushed.state, "error": view["error"]}, status)
