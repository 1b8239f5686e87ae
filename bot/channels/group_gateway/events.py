"""The gateway's JSON events (`message`, `join`, `leave`) read into neutral `GroupEvent`s, with an
error that says which field is wrong."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from handlers.groups import GroupEvent, GroupEventKind, GroupRef, Member

MAX_ID = 128
MAX_TEXT = 4000
MAX_MEMBERS = 1000  # per join or leave event


class BadEvent(ValueError):
    """The body is not an event of the contract; the message names the field."""


def parse_event(data: Any, received_at: datetime) -> GroupEvent:
    if not isinstance(data, dict):
        raise BadEvent("the body must be one JSON object (an event)")
    event_id = _string(data, "id", MAX_ID)
    kind = data.get("type")
    if kind not in {k.value for k in GroupEventKind}:
        raise BadEvent("'type' must be \"message\", \"join\" or \"leave\"")
    group_data = data.get("group")
    if not isinstance(group_data, dict):
        raise BadEvent("'group' must be an object with an 'id'")
    group = GroupRef(_string(group_data, "id", MAX_ID, "group.id"),
                     _optional(group_data, "name", 128, "group.name"))
    sent_at = _time(data.get("sent_at"), received_at)
    if kind == GroupEventKind.MESSAGE:
        sender = _member(data.get("sender"), "sender")
        text = data.get("text", "")
        if text is None:
            text = ""
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            raise BadEvent(f"'text' must be a string of at most {MAX_TEXT} characters")
        mentioned = data.get("mentioned")
        if mentioned is not None and not isinstance(mentioned, bool):
            raise BadEvent("'mentioned' must be true, false or left out")
        return GroupEvent(event_id, GroupEventKind.MESSAGE, group, sent_at, sender=sender, text=text,
                          mentioned=mentioned)
    members = data.get("members")
    if not isinstance(members, list) or not members or len(members) > MAX_MEMBERS:
        raise BadEvent(f"'members' must be a list of 1 to {MAX_MEMBERS} members")
    return GroupEvent(event_id, GroupEventKind(kind), group, sent_at,
                      members=tuple(_member(m, f"members.{i}") for i, m in enumerate(members)))


def _member(data: Any, where: str) -> Member:
    if not isinstance(data, dict):
        raise BadEvent(f"'{where}' must be an object with an 'id'")
    return Member(_string(data, "id", MAX_ID, f"{where}.id"), _optional(data, "name", 128, f"{where}.name"),
                  _optional(data, "unionid", MAX_ID, f"{where}.unionid"))


def _string(data: dict[str, Any], key: str, limit: int, where: str | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise BadEvent(f"'{where or key}' must be a non-empty string of at most {limit} characters")
    return value


def _optional(data: dict[str, Any], key: str, limit: int, where: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadEvent(f"'{where}' must be a string of at most {limit} characters, or null")
    return value


def _time(value: Any, default: datetime) -> datetime:
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadEvent("'sent_at' must be an ISO 8601 time with its offset, e.g. 2026-12-01T10:00:00+08:00")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadEvent("'sent_at' must be an ISO 8601 time with its offset, e.g. 2026-12-01T10:00:00+08:00") \
            from None
    if moment.tzinfo is None:
        raise BadEvent("'sent_at' needs its UTC offset, e.g. +08:00")
    return moment
