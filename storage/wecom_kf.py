"""WeCom Customer Service storage: the pull lease and cursor per kf account, and the messages a
pull records without answering them (the first backlog, staff typing in the WeCom client, events).

The lease is a row, not a session lock, so it works alike on every database and a process that
died mid-pull frees it when `locked_until` passes. A notification that finds the lease taken sets
`wanted`, and the holder pulls again before letting go: no notification is lost to the lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.conversations import NewMessage, log_event
from storage.models import Customer, Message
from storage.turns import Arrival, open_turn, store_messages
from storage.upsert import insert_ignore
from storage.wecom_kf_models import KfCursor, KfCustomer


@dataclass(frozen=True, slots=True)
class PullStart:
    """What a pull starts from: the stored cursor (None: never pulled) and the latest sync token."""

    cursor: str | None
    sync_token: str | None


async def want_pull(sessions: async_sessionmaker[AsyncSession], open_kfid: str, sync_token: str | None,
                    now: datetime) -> None:
    """Record that WeCom has news for the account (with the notification's token)."""
    async with sessions() as session, session.begin():
        dialect = session.get_bind().dialect.name
        await session.execute(insert_ignore(dialect, KfCursor, {
            "open_kfid": open_kfid, "cursor": None, "sync_token": sync_token, "wanted": True, "holder": None,
            "locked_until": None, "updated_at": now}))
        values: dict[str, Any] = {"wanted": True, "updated_at": now}
        if sync_token:
            values["sync_token"] = sync_token
        await session.execute(update(KfCursor).where(KfCursor.open_kfid == open_kfid).values(**values)
                              .execution_options(synchronize_session=False))


async def take_pull(sessions: async_sessionmaker[AsyncSession], open_kfid: str, holder: str, now: datetime,
                    lease: timedelta) -> PullStart | None:
    """Take the account's pull lease if it is wanted and free (or expired); None if not ours."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(KfCursor)
            .where(KfCursor.open_kfid == open_kfid, KfCursor.wanted.is_(True),
                   or_(KfCursor.holder.is_(None), KfCursor.locked_until < now, KfCursor.holder == holder))
            .values(holder=holder, locked_until=now + lease, wanted=False)
            .execution_options(synchronize_session=False))
        if not result.rowcount:  # type: ignore[attr-defined]
            return None
        row = (await session.execute(select(KfCursor.cursor, KfCursor.sync_token)
                                     .where(KfCursor.open_kfid == open_kfid))).one()
        return PullStart(row.cursor, row.sync_token)


async def save_cursor(sessions: async_sessionmaker[AsyncSession], open_kfid: str, holder: str, cursor: str,
                      now: datetime, lease: timedelta) -> bool:
    """Store the cursor after a page whose messages are all stored, and renew the lease; False
    when the lease is no longer ours (another process took over: stop pulling)."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(KfCursor).where(KfCursor.open_kfid == open_kfid, KfCursor.holder == holder)
            .values(cursor=cursor, locked_until=now + lease, updated_at=now)
            .execution_options(synchronize_session=False))
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_pull(sessions: async_sessionmaker[AsyncSession], open_kfid: str, holder: str) -> bool:
    """Let the lease go unless a notification came meanwhile; True when it did (pull again)."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(KfCursor).where(KfCursor.open_kfid == open_kfid, KfCursor.holder == holder,
                                   KfCursor.wanted.is_(False))
            .values(holder=None, locked_until=None).execution_options(synchronize_session=False))
        if result.rowcount:  # type: ignore[attr-defined]
            return False
        wanted = (await session.execute(select(KfCursor.wanted).where(
            and_(KfCursor.open_kfid == open_kfid, KfCursor.holder == holder)))).scalar()
        return bool(wanted)


async def read_cursor(sessions: async_sessionmaker[AsyncSession], open_kfid: str) -> str | None:
    async with sessions() as session:
        return (await session.execute(select(KfCursor.cursor).where(KfCursor.open_kfid == open_kfid))).scalar()


@dataclass(frozen=True, slots=True)
class Recorded:
    """A message to store in a customer's transcript without the bot answering it."""

    platform_msg_id: str
    direction: str  # "in" (the customer) | "out" (staff in the WeCom client)
    kind: str
    text: str
    payload: dict[str, Any]
    created_at: datetime
    delivery: str | None = None  # "staff" for what a servicer sent


async def record_messages(sessions: async_sessionmaker[AsyncSession], channel: str, user_id: str,
                          messages: Sequence[Recorded], now: datetime, *, source: str | None = None) -> int:
    """Store messages in the customer's transcript (creating the customer), each once: one already
    stored (same platform id) is left as it is. Returns how many were new."""
    stored = 0
    for message in messages:
        async with sessions() as session:
            try:
                async with session.begin():
                    turn = await open_turn(session, Arrival(channel, user_id, now, source=source))
                    turn.conversation.last_seq += 1
                    turn.messages.append(NewMessage(
                        conversation_id=turn.conversation.id, customer_id=turn.customer.id,
                        seq=turn.conversation.last_seq, channel=channel, direction=message.direction,
                        kind=message.kind, text=message.text, platform_msg_id=message.platform_msg_id,
                        payload=message.payload, created_at=message.created_at, delivery=message.delivery))
                    turn.conversation.updated_at = now
                    await store_messages(session, [turn])
                stored += 1
            except IntegrityError:
                continue  # stored by an earlier pull
    return stored


async def record_customer_event(sessions: async_sessionmaker[AsyncSession], channel: str, user_id: str,
                                kind: str, data: dict[str, Any], now: datetime, *,
                                source: str | None = None) -> None:
    """Log a platform event for the customer (created if new, with `source` as their acquisition
    source; an existing customer without one gets it)."""
    async with sessions() as session, session.begin():
        turn = await open_turn(session, Arrival(channel, user_id, now, source=source))
        if source and not turn.customer.source:
            turn.customer.source = source
        log_event(session, turn.customer.id, kind, now, data)


async def mark_message(sessions: async_sessionmaker[AsyncSession], channel: str, delivery: str,
                       note: dict[str, Any], *, platform_msg_id: str | None = None,
                       message_id: int | None = None) -> bool:
    """Set a stored message's delivery state (a send WeCom reports failed, a recalled message),
    found by its platform id or our id, with `note` added to its payload; False when not stored."""
    found = (Message.platform_msg_id == platform_msg_id) if message_id is None else (Message.id == message_id)
    async with sessions() as session, session.begin():
        row = (await session.execute(select(Message).where(Message.channel == channel, found))).scalar_one_or_none()
        if row is None:
            return False
        row.delivery = delivery
        row.payload = {**(row.payload or {}), **note}
        return True


async def customer_exists(sessions: async_sessionmaker[AsyncSession], channel: str, user_id: str) -> bool:
    async with sessions() as session:
        return (await session.execute(select(Customer.id).where(
            Customer.channel == channel, Customer.external_id == user_id))).first() is not None


async def remember_account(sessions: async_sessionmaker[AsyncSession], external_userid: str, open_kfid: str,
                           now: datetime) -> None:
    """The kf account the customer wrote to, for what we send them later."""
    async with sessions() as session, session.begin():
        dialect = session.get_bind().dialect.name
        await session.execute(insert_ignore(dialect, KfCustomer, {
            "external_userid": external_userid, "open_kfid": open_kfid, "updated_at": now}))
        await session.execute(update(KfCustomer).where(KfCustomer.external_userid == external_userid,
                                                       KfCustomer.open_kfid != open_kfid)
                              .values(open_kfid=open_kfid, updated_at=now)
                              .execution_options(synchronize_session=False))


async def account_of(sessions: async_sessionmaker[AsyncSession], external_userid: str) -> str | None:
    async with sessions() as session:
        return (await session.execute(select(KfCustomer.open_kfid).where(
            KfCustomer.external_userid == external_userid))).scalar()
