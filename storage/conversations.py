"""Queries the message path needs: customers, conversations, messages and the event log."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table, and_, bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import instance_state

from storage import sqlite_direct
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
    """
    if session.get_bind().dialect.name == "postgresql":
        customer = await lock_customer(session, channel, external_id)
        if customer is None:
            return None, None
        conversation = (await session.execute(_open_conversation, {"customer_id": customer.id})).scalar()
        return customer, conversation
    row = (await session.execute(_locked_customer_with_conversation,
                                 {"channel": channel, "external_id": external_id})).first()
    return (None, None) if row is None else (row[0], row[1])


# Built once: constructing and coercing a statement costs more than SQLite running it.
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


async def lock_customers_with_conversations(
    session: AsyncSession, keys: Collection[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Customer, Conversation | None]]:
    """Many customers (channel, external id) with their open conversations in one round trip.

    The batched message path's lookup (SQLite, one writer, so no row locks are involved); a
    customer who is not stored yet is missing from the result.
    """
    wanted = set(keys)
    if not wanted:
        return {}
    channels = {channel for channel, _ in wanted}
    rows = (await session.execute(
        _customers_with_conversations,
        {"channels": sorted(channels), "ids": sorted({external_id for _, external_id in wanted})},
    )).all()
    found: dict[tuple[str, str], tuple[Customer, Conversation | None]] = {}
    for customer, conversation in rows:  # ascending conversation id: the newest open one wins
        key = (customer.channel, customer.external_id)
        if key in wanted:
            found[key] = (customer, conversation)
    return found


_customers_with_conversations = (
    select(Customer, Conversation)
    .outerjoin(Conversation, and_(Conversation.customer_id == Customer.id, Conversation.state != "closed"))
    .where(Customer.channel.in_(bindparam("channels", expanding=True)),
           Customer.external_id.in_(bindparam("ids", expanding=True)))
    .order_by(Customer.id, Conversation.id)
)


class WriterIds:
    """Ids for the customers, conversations and messages one writer inserts in this transaction.

    Only sound while the transaction holds the database's one write lock (SQLite's BEGIN
    IMMEDIATE): nobody else can insert until commit, and SQLite itself would hand out the same
    ids (the largest plus one). Rows with known ids need no flush to learn them, and go to the
    database together in one executemany per table, where ids the database assigns need a
    flush (one INSERT … RETURNING) as soon as a later row refers to them.
    """

    def __init__(self, session: AsyncSession):
        self._session = session
        self._next: dict[type, int] = {}

    async def take(self, model: type[Customer | Conversation | Message], count: int = 1) -> int:
        """The first of `count` consecutive unused ids of the model's table.

        A table's largest id is read when its first id is taken; take a table's ids either all
        from here or after anything else has inserted into it in this transaction.
        """
        if model not in self._next:
            # Straight on the connection, without an autoflush: what is pending already has its
            # ids from here.
            (largest,) = await sqlite_direct.scalars(self._session, _largest_id[model])
            if model is not Message and not self._next.keys() - {Message}:
                # Nothing tells the unit of work that a message must follow its new customer
                # (no relationship), so rows may go out in either order: check the foreign
                # keys at commit instead of per statement (reset by SQLite at commit).
                await (await self._session.connection()).execute(_defer_foreign_keys)
            self._next[model] = (largest or 0) + 1
        first = self._next[model]
        self._next[model] = first + count
        return first


_defer_foreign_keys = text("PRAGMA defer_foreign_keys = ON")
_largest_id: dict[type, Any] = {model: select(func.max(model.id)) for model in (Customer, Conversation, Message)}


@dataclass(slots=True)
class NewMessage:
    """A message on its way to the messages table.

    The message path stores its messages as plain rows rather than through the unit of work:
    nothing reads them back in the same transaction, and a mapped object costs far more to
    build than the row does to insert.
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


async def insert_messages(session: AsyncSession, messages: Sequence[NewMessage]) -> None:
    """Store messages that already carry their ids (a replied-to message before its replies) in
    one executemany: for the SQLite writer that numbers its own rows (see WriterIds)."""
    if messages:
        await sqlite_direct.executemany_values(session, _insert_message, _MESSAGE_COLUMNS,
                                               [m.values() for m in messages])


async def insert_message(session: AsyncSession, message: NewMessage) -> int:
    """Store one message and give it the id the database chose (its replies refer to it)."""
    result = await (await session.connection()).execute(_insert_message, message.row())
    (message_id,) = result.inserted_primary_key or (None,)
    if message_id is None:
        raise RuntimeError("the database gave the stored message no id")
    message.id = int(message_id)
    return message.id


_insert_message = insert(cast(Table, Message.__table__))
_MESSAGE_COLUMNS = ("id", "conversation_id", "customer_id", "seq", "channel", "direction", "kind", "text",
                    "platform_msg_id", "reply_to_id", "delivery", "intent", "payload", "created_at")


_Row = TypeVar("_Row", Customer, Conversation)


def new_customer(channel: str, external_id: str, now: datetime, **fields: Any) -> Customer:
    return _every_column_set(Customer(channel=channel, external_id=external_id, created_at=now, stage="contact",
                                      subscribed=True, **fields))


def start_conversation(session: AsyncSession, customer: Customer, now: datetime) -> Conversation:
    conversation = _every_column_set(Conversation(customer_id=customer.id, state="bot", last_seq=0,
                                                  not_understood_streak=0, started_at=now, updated_at=now))
    session.add(conversation)
    return conversation


def _every_column_set(row: _Row) -> _Row:
    """Give the columns nobody set (with no default of their own) their NULL now.

    An attribute never set is not loaded after the INSERT either: the SQLite writer would then
    load a new customer's rows again for their second message instead of keeping them.
    """
    state = instance_state(row)
    for prop in state.mapper.column_attrs:
        column = prop.columns[0]
        if (prop.key not in state.dict and column.nullable and column.default is None
                and column.server_default is None):
            setattr(row, prop.key, None)
    return row



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


async def set_delivery(session: AsyncSession, message_id: int, delivery: str, error: str | None = None) -> None:
    values: dict[str, Any] = {"delivery": delivery}
    if error is not None:
        message = await session.get(Message, message_id)
        if message is not None:
            values["payload"] = {**message.payload, "error": error}
    await session.execute(update(Message).where(Message.id == message_id).values(**values))


def log_event(session: AsyncSession, customer_id: int | None, kind: str, when: datetime,
              data: dict[str, Any] | None = None) -> None:
    session.add(Event(customer_id=customer_id, kind=kind, data=data or {}, occurred_at=when))
