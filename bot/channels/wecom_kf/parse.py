"""`sync_msg` items into the neutral `Inbound` (customer messages) or transcript rows (staff)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from handlers.messages import EventKind, Inbound, InboundKind

CHANNEL = "wecom_kf"
CUSTOMER, SYSTEM, SERVICER = 3, 4, 5  # `origin` of an item

_KINDS = {"text": InboundKind.TEXT, "image": InboundKind.IMAGE, "voice": InboundKind.VOICE,
          "video": InboundKind.VIDEO, "location": InboundKind.LOCATION, "link": InboundKind.LINK}
MAX_ID = 128  # external_userid / open_kfid / msgid longer than this is not WeCom's


def sent_at(item: dict[str, Any], fallback: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(item.get("send_time") or 0), UTC) if item.get("send_time") else fallback
    except (TypeError, ValueError, OverflowError, OSError):
        return fallback


def item_problem(item: Any) -> str | None:
    """Why an item cannot be taken at all (it is skipped, with a log line), or None."""
    if not isinstance(item, dict):
        return "not an object"
    for name in ("msgid", "external_userid"):
        value = item.get(name)
        if item.get("origin") == SYSTEM and name == "external_userid":
            continue
        if not isinstance(value, str) or not value or len(value) > MAX_ID:
            return f"{name} is missing or too long"
    return None


def _text_of(item: dict[str, Any]) -> tuple[InboundKind, str, EventKind | None, str | None]:
    msgtype = str(item.get("msgtype") or "")
    raw = item.get(msgtype)
    body: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if msgtype == "text":
        menu_id = body.get("menu_id")
        content = str(body.get("content") or "")
        if menu_id:  # a click on a menu message: the menu item's id, like a menu key
            return InboundKind.EVENT, content or str(menu_id), EventKind.CLICK, str(menu_id)
        return InboundKind.TEXT, content, None, None
    if msgtype == "msgmenu":  # an answer to a menu message shows as its chosen item's text
        return InboundKind.TEXT, str(body.get("content") or ""), None, None
    if msgtype == "location":
        return InboundKind.LOCATION, str(body.get("name") or body.get("address") or ""), None, None
    if msgtype == "link":
        return InboundKind.LINK, str(body.get("title") or ""), None, None
    if msgtype == "miniprogram":
        return InboundKind.LINK, str(body.get("title") or ""), None, None
    return _KINDS.get(msgtype, InboundKind.UNKNOWN), "", None, None


def to_inbound(item: dict[str, Any], received_at: datetime) -> Inbound:
    """A customer's item (`origin` 3); every platform field is kept in the payload."""
    kind, text, event, key = _text_of(item)
    return Inbound(channel=CHANNEL, user_id=str(item["external_userid"]), kind=kind,
                   received_at=sent_at(item, received_at), dedup_key=f"msg:{item['msgid']}", text=text,
                   event=event, event_key=key, payload=dict(item))


def describe(item: dict[str, Any]) -> tuple[str, str]:
    """(kind, text) of an item for the transcript."""
    kind, text, _, _ = _text_of(item)
    return str(item.get("msgtype") or kind), text
