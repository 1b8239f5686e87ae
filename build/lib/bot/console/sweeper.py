"""The unclaimed-queue sweeper: a chat queued for T minutes gets one honest wait message.

Several processes may sweep at once: the flag is set by a conditional UPDATE, so only one of
them sends the message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.base import Text
from bot.console.hours import wait_notice
from bot.console.settings import StaffSettings
from bot.outbox.outbox import Outbox, Push
from flows.handoff import State
from storage.models import Conversation, Customer
from storage.outgoing import Outgoing, append_outgoing

log = logging.getLogger(__name__)
BATCH = 100


async def sweep_unclaimed(sessions: async_sessionmaker[AsyncSession], outbox: Outbox, settings: StaffSettings,
                          now: datetime, notify: Callable[[], Awaitable[None]] | None = None) -> int:
    """Send the wait message to every chat queued longer than `wait_minutes`; returns how many."""
    cutoff = now - timedelta(minutes=settings.wait_minutes)
    async with sessions() as session:
        due = (await session.execute(
            select(Conversation.id, Conversation.customer_id)
            .where(Conversation.state == State.QUEUED, Conversation.queued_at <= cutoff,
                   Conversation.wait_message_sent_at.is_(None))
            .order_by(Conversation.queued_at).limit(BATCH)
        )).all()
    sent = 0
    text = wait_notice(settings, now)
    for conversation_id, customer_id in due:
        async with sessions() as session, session.begin():
            # Customer first, as on the message path, so the two never wait on each other.
            customer = (await session.execute(
                select(Customer).where(Customer.id == customer_id).with_for_update()
            )).scalar_one()
            taken = await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.state == State.QUEUED,
                       Conversation.queued_at <= cutoff, Conversation.wait_message_sent_at.is_(None))
                .values(wait_message_sent_at=now)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                continue  # claimed meanwhile, or another process sent it
            (message_id,) = await append_outgoing(session, [Outgoing(
                conversation_id=conversation_id, customer_id=customer.id, channel=customer.channel, text=text,
                created_at=now, intent="handoff_wait", payload={"source": "handoff"})], with_ids=True)
            channel, user_id = customer.channel, customer.external_id
        await outbox.deliver(channel, user_id, [Push(message_id, Text(text))])
        sent += 1
    if sent and notify is not None:
        await notify()
    if sent:
        log.info("sent the wait message to %d queued chats", sent)
    return sent
