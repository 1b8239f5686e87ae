"""One path for every inbound: deduplicate → lock the customer → store → route → store the answer.

The customer lock is taken before any state is read, so two messages of one customer never
see the same conversation state; retries are recognised by the unique platform message id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.customer_locks import CustomerLocks
from bot.messages import EventKind, Inbound, InboundKind, Outcome, Reply
from bot.privacy import mask
from handlers.router import Router
from storage import conversations as store
from storage.db import is_retryable
from storage.models import Customer, Message

log = logging.getLogger(__name__)

DEFAULT_NICKNAME = "亲"
_ATTEMPTS = 3


@dataclass
class PipelineStats:
    handled: int = 0
    duplicates: int = 0
    not_understood: int = 0


class Pipeline:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], router: Router, clock: Clock):
        self._sessions = sessions
        self._router = router
        self._clock = clock
        self._locks = CustomerLocks()
        self.stats = PipelineStats()

    async def handle(self, inbound: Inbound) -> Outcome:
        async with self._locks.hold((inbound.channel, inbound.user_id)):
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    return await self._handle_locked(inbound)
                except IntegrityError:
                    # Either a retry of a stored delivery, or another process created this
                    # customer first: look again with the row now there.
                    duplicate = await self._duplicate_outcome(inbound)
                    if duplicate is not None:
                        return duplicate
                    if attempt == _ATTEMPTS:
                        raise
                except DBAPIError as error:
                    if not is_retryable(error) or attempt == _ATTEMPTS:
                        raise
                    log.info("retrying %s after %s", mask(inbound.user_id), type(error.orig).__name__)
            raise AssertionError("unreachable")

    async def _handle_locked(self, inbound: Inbound) -> Outcome:
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            customer = await store.lock_customer(session, inbound.channel, inbound.user_id)
            if customer is None:
                customer = store.new_customer(inbound.channel, inbound.user_id, now,
                                              unionid=inbound.unionid, source=_source_of(inbound))
                session.add(customer)
                await session.flush()
                store.log_event(session, customer.id, "first_contact", now,
                                {"channel": inbound.channel, "source": customer.source})
            elif inbound.dedup_key and (existing := await store.find_inbound(
                    session, inbound.channel, inbound.dedup_key)) is not None:
                return await self._outcome_of(session, existing)
            conversation = await store.current_conversation(session, customer, now)

            routed = self._router.route(inbound, {"nickname": customer.nickname or DEFAULT_NICKNAME})
            self._apply_customer_changes(session, customer, inbound, now)

            seq = conversation.last_seq + 1
            incoming = Message(
                conversation_id=conversation.id, customer_id=customer.id, seq=seq,
                channel=inbound.channel, direction="in", kind=str(inbound.kind), text=inbound.text,
                platform_msg_id=inbound.dedup_key, intent=routed.match.intent if routed.match else None,
                payload=inbound.payload, created_at=inbound.received_at,
            )
            session.add(incoming)
            await session.flush()
            outgoing = []
            for reply in routed.replies:
                seq += 1
                outgoing.append(Message(
                    conversation_id=conversation.id, customer_id=customer.id, seq=seq,
                    channel=inbound.channel, direction="out", kind="text", text=reply.text,
                    reply_to_id=incoming.id, delivery="passive", intent=reply.intent,
                    payload={"source": reply.source}, created_at=now,
                ))
            session.add_all(outgoing)
            conversation.last_seq = seq
            conversation.updated_at = now
            if inbound.kind is InboundKind.TEXT:
                conversation.not_understood_streak = (
                    0 if routed.understood else conversation.not_understood_streak + 1
                )
            await session.flush()
            self.stats.handled += 1
            if not routed.understood:
                self.stats.not_understood += 1
            log.debug("handled %s from %s: %d replies", inbound.kind, mask(inbound.user_id), len(outgoing))
            return Outcome(replies=routed.replies, message_ids=[m.id for m in outgoing])

    def _apply_customer_changes(self, session: AsyncSession, customer: Customer, inbound: Inbound,
                                now: object) -> None:
        customer.last_inbound_at = inbound.received_at
        if inbound.unionid and not customer.unionid:
            customer.unionid = inbound.unionid
        if inbound.kind is not InboundKind.EVENT:
            return
        if inbound.event is EventKind.SUBSCRIBE:
            customer.subscribed = True
            customer.source = customer.source or _source_of(inbound)
        elif inbound.event is EventKind.UNSUBSCRIBE:
            customer.subscribed = False
        if inbound.event in (EventKind.SUBSCRIBE, EventKind.UNSUBSCRIBE, EventKind.SCAN):
            store.log_event(session, customer.id, str(inbound.event), inbound.received_at,
                            {"channel": inbound.channel, "key": inbound.event_key})

    async def _duplicate_outcome(self, inbound: Inbound) -> Outcome | None:
        if not inbound.dedup_key:
            return None
        async with self._sessions() as session:
            existing = await store.find_inbound(session, inbound.channel, inbound.dedup_key)
            return None if existing is None else await self._outcome_of(session, existing)

    async def _outcome_of(self, session: AsyncSession, existing: Message) -> Outcome:
        self.stats.duplicates += 1
        replies = await store.replies_to(session, existing.id)
        delivery = replies[0].delivery if replies else None
        return Outcome(
            replies=[Reply(m.text, intent=m.intent) for m in replies],
            message_ids=[m.id for m in replies],
            duplicate=True,
            delivery=delivery,
        )


def _source_of(inbound: Inbound) -> str | None:
    """The acquisition source (QR scene / channel code) of a follow or scan."""
    if inbound.event in (EventKind.SUBSCRIBE, EventKind.SCAN) and inbound.event_key:
        return inbound.event_key
    return None
