"""The simulator's group room: simulated members in a named group, @-mentioning the bot, joining
and leaving — every group behaviour of a gateway, without one.

Members are simulator customers (their 1:1 simulator chat is their private chat: a personal
answer asked in the group shows up there). The group's own messages, welcomes included, are read
back from the group log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app.http_body import read_limited
from bot.app.http_security import SECURITY_HEADERS
from bot.channels.base import DeliveryResult
from bot.channels.simulator.channel import CHANNEL, MAX_BODY, MAX_TEXT
from bot.clock import Clock
from bot.groups.journal import JournalOverloaded
from bot.groups.room import GroupRoom
from bot.pipeline.pipeline import PipelineOverloaded
from handlers.groups import GroupEvent, GroupEventKind, GroupRef, Member
from handlers.untrusted import BadInput, id_in_range, parse_json
from storage.db import read_session
from storage.groups import PENDING, SENDING, group_entries_after, last_entry_id

MAX_NAME = 64


class BadGroupRequest(ValueError):
    pass


class SimulatorGroupPoster:
    """Posts into a simulated group: the stored post is the message; the room reads it back."""

    async def post(self, group_id: str, text: str, mention: Sequence[str], *, key: str) -> DeliveryResult:
        return DeliveryResult.delivered(key)


def parse_group_request(data: Any, received_at: datetime) -> GroupEvent:
    """`{"group", "type": "message", "member", "text", "mentioned"?}` or
    `{"group", "type": "join" | "leave", "members": [...]}`; an optional `"id"` makes resends idempotent."""
    if not isinstance(data, dict):
        raise BadGroupRequest('body must be a JSON object like {"group": "会员群", "member": "amy", "text": "@思语 你好"}')
    group = _name(data.get("group"), "group")
    event_id = data.get("id")
    if event_id is not None and (not isinstance(event_id, str) or not event_id or len(event_id) > 64):
        raise BadGroupRequest("'id' must be a string of at most 64 characters")
    event_id = f"sim-{event_id}" if event_id else f"sim-{uuid.uuid4().hex}"
    kind = data.get("type", "message")
    ref = GroupRef(group, group)
    if kind == "message":
        member = _name(data.get("member"), "member")
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadGroupRequest("'text' must be a non-empty string")
        if len(text) > MAX_TEXT:
            raise BadGroupRequest(f"'text' is longer than {MAX_TEXT} characters")
        mentioned = data.get("mentioned")
        if mentioned is not None and not isinstance(mentioned, bool):
            raise BadGroupRequest("'mentioned' must be true, false or left out")
        return GroupEvent(event_id, GroupEventKind.MESSAGE, ref, received_at, sender=Member(member, member),
                          text=text, mentioned=mentioned)
    if kind not in ("join", "leave"):
        raise BadGroupRequest("'type' must be \"message\", \"join\" or \"leave\"")
    members = data.get("members")
    if not isinstance(members, list) or not members or len(members) > 100:
        raise BadGroupRequest("'members' must be a list of 1 to 100 names")
    names = [_name(m, "members") for m in members]
    return GroupEvent(event_id, GroupEventKind(kind), ref, received_at,
                      members=tuple(Member(name, name) for name in names))


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise BadGroupRequest(f"'{field}' must be a non-empty string of at most {MAX_NAME} characters")
    return value.strip()


class SimulatorGroupRoom:
    def __init__(self, room: GroupRoom, sessions: async_sessionmaker[AsyncSession], clock: Clock):
        self._room = room
        self._sessions = sessions
        self._clock = clock

    async def post_event(self, request: web.Request) -> web.Response:
        raw = await read_limited(request, MAX_BODY)
        if raw is None:
            return _json({"error": f"body larger than {MAX_BODY} bytes"}, 413)
        try:
            event = parse_group_request(parse_json(raw or b"null"), self._clock.now())
        except BadInput as error:
            return _json({"error": f"invalid JSON: {error}" if not error.where else str(error)}, 400)
        except BadGroupRequest as error:
            return _json({"error": str(error)}, 400)
        try:
            answer = await self._room.handle(event)
        except (JournalOverloaded, PipelineOverloaded):
            return _json({"error": "too busy, try again"}, 503)
        return _json({"replies": [{"text": r.text, "mention": r.mention} for r in answer.replies],
                      "private": answer.private, "duplicate": answer.duplicate})

    async def entries(self, request: web.Request) -> web.Response:
        """`GET api/group?group=NAME&after=ID`: the group's log after ID; without `after`, only the
        cursor to read from (`last_id`)."""
        try:
            group = _name(request.query.get("group"), "group")
        except BadGroupRequest as error:
            return _json({"error": str(error)}, 400)
        after = id_in_range(request.query["after"], minimum=0) if "after" in request.query else None
        if "after" in request.query and after is None:
            return _json({"error": "'after' must be an id from this log"}, 400)
        async with read_session(self._sessions) as session:
            if after is None:
                return _json({"entries": [], "last_id": await last_entry_id(session)})
            found = await group_entries_after(session, CHANNEL, group, after)
        # A welcome still gathering is not in the group yet: the cursor stays before it, so it is
        # read once it is sent (entries after it come again; the page keeps each id once).
        unsent = [e for e in found if e.delivery in (PENDING, SENDING)]
        shown = [e for e in found if e.delivery not in (PENDING, SENDING)]
        last_id = unsent[0].id - 1 if unsent else (found[-1].id if found else after)
        return _json({"entries": [{"id": e.id, "kind": e.kind, "direction": e.direction, "member": e.member_id,
                                   "members": list(e.members or []), "text": e.text, "delivery": e.delivery}
                                  for e in shown],
                      "last_id": last_id})


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=SECURITY_HEADERS,
                             dumps=lambda value: json.dumps(value, ensure_ascii=False))
