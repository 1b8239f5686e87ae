"""Outgoing messages join their conversation's transcript here, and only here: each takes the
conversation's next sequence number, which is bumped in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.models import Conversation, Message


@dataclass(slots=True)
class Outgoing:
    """An outgoing message to append; its `seq` is the conversation's to give."""

    conversation_id: int
    customer_id: int
    channel: str
    text: str
    created_at: datetime
    kind: str = "text"
    delivery: str | None = "pending"
    intent: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    reply_to_id: int | None = None


_conversations = cast(Table, Conversation.__table__)
_messages = cast(Table, Message.__table__)
_LAST_SEQ = select(_conversations.c.id, _conversations.c.last_seq).where(
    _conversations.c.id.in_(bindparam("ids", expanding=True)))
_SET_LAST_SEQ = update(_conversations).where(_conversations.c.id == bindparam("conversation_id")).values(
    last_seq=bindparam("b_last_seq"))
_INSERT = insert(_messages)


async def append_outgoing(db: AsyncSession | AsyncConnection, messages: Sequence[Outgoing], *,
                          with_ids: bool = False) -> list[int]:
    """Append the messages, in order, at the end of their conversations; returns their ids when
    `with_ids` (one INSERT each), else [] (one executemany).

    The caller holds the customers' row locks, as every writer of a transcript does, so the
    sequence numbers read here are still the last when the rows go in.
    """
    if not messages:
        return []
    conversation_ids = sorted({m.conversation_id for m in messages})
    last = {row.id: row.last_seq for row in await db.execute(_LAST_SEQ, {"ids": conversation_ids})}
    missing = set(conversation_ids) - last.keys()
    if missing:
        raise LookupError(f"no conversation {sorted(missing)}")
    rows = []
    for message in messages:
        last[message.conversation_id] += 1
        rows.append({
            "conversation_id": message.conversation_id, "customer_id": message.customer_id,
            "seq": last[message.conversation_id], "channel": message.channel, "direction": "out",
            "kind": message.kind, "text": message.text, "platform_msg_id": None, "reply_to_id": message.reply_to_id,
            "delivery": message.delivery, "intent": message.intent, "payload": message.payload,
            "created_at": message.created_at,
        })
    await _executemany(db, _SET_LAST_SEQ, [{"conversation_id": i, "b_last_seq": last[i]} for i in conversation_ids])
    if not with_ids:
        await _executemany(db, _INSERT, rows)
        return []
    ids = []
    for row in rows:
        result = cast(CursorResult[Any], await db.execute(_INSERT, row))
        (message_id,) = result.inserted_primary_key or (None,)
        if message_id is None:
            raise RuntimeError("the database gave the stored message no id")
        ids.append(int(message_id))
    return ids


async def _executemany(db: AsyncSession | AsyncConnection, statement: Any, rows: list[dict[str, Any]]) -> None:
    if len(rows) == 1:
        await db.execute(statement, rows[0])
    elif rows:
        await db.execute(statement, rows)


async def record_delivery(session: AsyncSession, message_id: int, delivery: str, error: str | None = None, *,
                          platform_message_id: str | None = None) -> None:
    """How an outgoing message went out ("pending", "push", "failed"), with the platform's error
    or message id kept in its payload."""
    values: dict[str, Any] = {"delivery": delivery}
    if error is not None or platform_message_id is not None:
        payload = (await session.execute(select(_messages.c.payload).where(_messages.c.id == message_id))).scalar()
        extra = {"error": error} if error is not None else {"platform_message_id": platform_message_id}
        values["payload"] = {**(payload or {}), **extra}
    await session.execute(update(_messages).where(_messages.c.id == message_id).values(**values))
