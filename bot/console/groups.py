"""The console's customer groups (operators and admins): each group's members and the day's and
the week's joins, leaves, messages, active speakers and bot answers; a group's figures per day
and its recent messages."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from bot.app import keys
from storage.db import read_session
from storage.groups import group_detail, group_list

PERIOD_DAYS = 7  # "this week": today and the six days before


def _today(request: web.Request) -> date:
    zone = ZoneInfo(request.app[keys.SETTINGS].touches.default_timezone)
    return request.app[keys.CLOCK].now().astimezone(zone).date()


def _days(request: web.Request) -> int:
    try:
        return max(1, min(int(request.query.get("days", PERIOD_DAYS)), 92))
    except ValueError:
        return PERIOD_DAYS


async def groups(request: web.Request) -> dict[str, Any]:
    today = _today(request)
    since = today - timedelta(days=_days(request) - 1)
    async with read_session(request.app[keys.SESSIONS]) as session:
        found = await group_list(session, today, since)
    return {"today": today.isoformat(), "since": since.isoformat(), "groups": found}


async def group(request: web.Request) -> dict[str, Any] | None:
    since = _today(request) - timedelta(days=_days(request) - 1)
    async with read_session(request.app[keys.SESSIONS]) as session:
        return await group_detail(session, int(request.match_info["id"]), since)
