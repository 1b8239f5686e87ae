"""Queries the message path needs: customers, conversations, messages and the event log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Conversation, Customer, Event, Message


async def lock_customer(session: AsyncSession, channel: str, external_id: str) -> Customer | None:
    """The customer's row, locked until commit (PostgreSQL/MySQL; SQLite has one writer anyway).

    Holding this row lock is what keeps one customer's messages in order across processes.
    """
    return (
        await session.execute(
            select(Customer)
            .where(Customer.channel == channel, Customer.external_id == external_id)
            .with_for_update()
        )
    ).scalar_one_or_none()


async def lock_customer_with_conversation(
    session: AsyncSession, channel: str, external_id: str
) -> tuple[Customer | None, Conversation | None]:
    """The locked customer and their open conversation (the message path's read).

    One round trip on SQLite and MariaDB. PostgreSQL refuses FOR UPDATE on the nullable side
    of an outer join, and when a locked row changed while it waited it re-reads only that row,
    keeping the join's conversation as its snapshot saw it (a stale `last_seq`): there the
    conversation is read by a second statement, after the lock is held.

    On MariaDB/MySQL a locking read of a customer who does not exist yet locks the gap in the
    index where they would go, and two first contacts' inserts into one gap deadlock: there a
    plain read asks first, and only an existing customer is locked.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "mysql" and (await session.execute(_customer_exists,
                                                     {"channel": channel, "external_id": external_id})).first() is None:
        return None, None
    if dialect == "postgresql":
        customer = await lock_customer(session, channel, external_id)
        if customer is None:
            return None, None
        conversation = (await session.execute(_open_conversation, {"customer_id": customer.id})).scalar()
        return customer, conversation
    row = (await session.execute(_locked_customer_with_conversation,
                                 {"channel": channel, "external_id": external_id})).first()
    return (None, None) if row is None else (row[0], row[1])


async def customers_with_conversations(
    session: AsyncSession, channel_ids: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Customer, Conversation | None]]:
    """Several customers with their open conversations in one statement, by (channel, external id).

    For SQLite's shared transaction, which already holds the database's one write lock: no row
    lock is needed, and one read for the group replaces one per message.
    """
    if not channel_ids:
        return {}
    rows = (await session.execute(
        select(Customer, Conversation)
        .outerjoin(Conversation, and_(Conversation.customer_id == Customer.id, Conversation.state != "closed"))
        .where(tuple_(Customer.channel, Customer.external_id).in_(sorted(channel_ids)))
        .order_by(Customer.id, Conversation.id)
    )).all()
    found: dict[tuple[str, str], tuple[Customer, Conversation | None]] = {}
    for customer, conversation in rows:  # the newest open conversation of each customer last
        found[(customer.channel, customer.external_id)] = (customer, conversation)
    return found


# Built once: constructing and coercing a statement costs more than SQLite running it.
_customer_exists = select(Customer.id).where(Customer.channel == bindparam("channel"),
                                             Customer.external_id == bindparam("external_id"))
_locked_customer_with_conversation = (
    select(Customer, Conversation)
    .outerjoin(Conversation, and_(Conversation.customer_id == Customer.id, Conversation.state != "closed"))
    .where(Customer.channel == bindparam("channel"), Customer.external_id == bindparam("external_id"))
    .order_by(Conversation.id.desc())
    .limit(1)
    .with_for_update()
)
_open_conversation = (
    select(Conversation)
    .where(Conversation.customer_id == bindparam("customer_id"), Conversation.state != "closed")
    .order_by(Conversation.id.desc())
    .limit(1)
)


@dataclass(slots=True)
class NewMessage:
    """A message on its way to the messages table, stored by `insert_message` once its turn is done.

    A plain row rather than a mapped object: nothing reads it back in the same transaction, and
    a reply refers to the inbound it answers before either has an id.
    """

    conversation_id: int
    customer_id: int
    seq: int
    channel: str
    direction: str  # "in" | "out"
    kind: str
    text: str
    created_at: datetime
    platform_msg_id: str | None = None
    reply_to: NewMessage | None = None
    delivery: str | None = None
    intent: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def row(self) -> dict[str, Any]:
        """The messages row; without `id` while the database is to choose it."""
        row = dict(zip(_MESSAGE_COLUMNS, self.values(), strict=True))
        if self.id is None:
            del row["id"]
        return row

    def values(self) -> tuple[Any, ...]:
        """The row's values in _MESSAGE_COLUMNS order, `id` included."""
        return (self.id, self.conversation_id, self.customer_id, self.seq, self.channel, self.direction, self.kind,
                self.text, self.platform_msg_id, None if self.reply_to is None else self.reply_to.id,
                self.delivery, self.intent, self.payload, self.created_at)


async def insert_message(session: AsyncSession, message: NewMessage) -> int:
    """Store one message and give it the id the database chose (its replies refer to it)."""
    await insert_messages(session, [message])
    assert message.id is not None
    return message.id


async def insert_messages(session: AsyncSession, messages: Sequence[NewMessage]) -> None:
    """Store messages and give each the id the database chose: those that answer none first (in
    one statement), then the replies, which refer to them."""
    first = [m for m in messages if m.reply_to is None or m.reply_to.id is not None]
    replies = [m for m in messages if m.reply_to is not None and m.reply_to.id is None]
    for level in (first, replies):
        if not level:
            continue
        # A message is known by its place in its conversation, so the ids need not come back in
        # the rows' order, and the rows go in one multi-row INSERT … RETURNING.
        by_place = {(m.conversation_id, m.seq): m for m in level}
        result = await session.execute(_insert_returning_place, [m.row() for m in level])
        for message_id, conversation_id, seq in result.all():
            by_place[(conversation_id, seq)].id = int(message_id)
        if any(m.id is None for m in level):
            raise RuntimeError("the database gave a stored message no id")


_messages_table = cast(Table, Message.__table__)
_insert_returning_place = insert(_messages_table).returning(
    _messages_table.c.id, _messages_table.c.conversation_id, _messages_table.c.seq)
_MESSAGE_COLUMNS = ("id", "conversation_id", "customer_id", "seq", "channel", "direction", "kind", "text",
                    "platform_msg_id", "reply_to_id", "delivery", "intent", "payload", "created_at")


def new_customer(channel: str, external_id: str, now: datetime, **fields: Any) -> Customer:
    return Customer(channel=channel, external_id=external_id, created_at=now, stage="contact",
                    subscribed=True, **fields)


def start_conversation(session: AsyncSession, customer: Customer, now: datetime) -> Conversation:
    conversation = Conversation(customer_id=customer.id, state="bot", last_seq=0, not_understood_streak=0,
                                started_at=now, updated_at=now)
    session.add(conversation)
    return conversation


async def current_conversation(session: AsyncSession, customer: Customer, now: datetime) -> Conversation:
    """The customer's open conversation, started when there is none."""
    conversation = (
        await session.execute(
            select(Conversation)
            .where(Conversation.customer_id == customer.id, Conversation.state != "closed")
            .order_by(Conversation.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if conversation is None:
        conversation = start_conversation(session, customer, now)
        await session.flush()
    return conversation


async def find_inbound(session: AsyncSession, channel: str, platform_msg_id: str) -> Message | None:
    return (
        await session.execute(
            select(Message).where(Message.channel == channel, Message.platform_msg_id == platform_msg_id)
        )
    ).scalar_one_or_none()


async def replies_to(session: AsyncSession, message_id: int) -> list[Message]:
    return list(
        (
            await session.execute(
                select(Message).where(Message.reply_to_id == message_id).order_by(Message.seq)
            )
        ).scalars()
    )


async def transcript(session: AsyncSession, customer_id: int) -> list[Message]:
    return list(
        (
            await session.execute(
                select(Message).where(Message.customer_id == customer_id).order_by(Message.id)
            )
        ).scalars()
    )


def log_event(session: AsyncSession, customer_id: int | None, kind: str, when: datetime,
              data: dict[str, Any] | None = None) -> None:
    session.add(Event(customer_id=customer_id, kind=kind, data=data or {}, occurred_at=when))
