"""One path for every inbound: deduplicate → lock the customer → store → route → store the answer.

The customer lock is taken before any state is read, so two messages of one customer never
see the same conversation state; retries are recognised by the unique platform message id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.customer_locks import CustomerLocks
from bot.messages import EventKind, Inbound, InboundKind, Outcome, Reply
from bot.privacy import mask
from bot.turn import Stage, Turn
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
    def __init__(self, sessions: async_sessionmaker[AsyncSession], router: Router, clock: Clock,
                 stages: Sequence[Stage] = ()):
        self._sessions = sessions
        self._router = router
        self._clock = clock
        self._stages = list(stages)
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
            customer, conversation = await store.lock_customer_with_conversation(
                session, inbound.channel, inbound.user_id)
            if customer is None:
                customer = store.new_customer(inbound.channel, inbound.user_id, now,
                                              unionid=inbound.unionid, source=_source_of(inbound))
                session.add(customer)
                await session.flush()
                store.log_event(session, customer.id, "first_contact", now,
                                {"channel": inbound.channel, "source": customer.source})
            if conversation is None:
                conversation = store.start_conversation(session, customer, now)
                await session.flush()
            self._apply_customer_changes(session, customer, inbound, now)

            # A retry of a stored delivery fails on the unique platform message id when this is
            # flushed (at the end, or earlier if a stage flushes): see handle().
            conversation.last_seq += 1
            incoming = Message(
                conversation_id=conversation.id, customer_id=customer.id, seq=conversation.last_seq,
                channel=inbound.channel, direction="in", kind=str(inbound.kind), text=inbound.text,
                platform_msg_id=inbound.dedup_key, payload=inbound.payload, created_at=inbound.received_at,
            )
            session.add(incoming)

            turn = Turn(session=session, inbound=inbound, customer=customer, conversation=conversation,
                        message=incoming, now=now,
                        variables={"nickname": customer.nickname or DEFAULT_NICKNAME})
            await self._run(turn)

            incoming.intent = turn.match.intent if turn.match else None
            outgoing = []
            for reply in turn.replies:
                conversation.last_seq += 1
                outgoing.append(Message(
                    conversation_id=conversation.id, customer_id=customer.id, seq=conversation.last_seq,
                    channel=inbound.channel, direction="out", kind="text", text=reply.text,
                    reply_to=incoming, delivery="passive", intent=reply.intent,
                    payload={"source": reply.source}, created_at=now,
                ))
            session.add_all(outgoing)
            conversation.updated_at = now
            await session.flush()
        self.stats.handled += 1
        if not turn.understood:
            self.stats.not_understood += 1
        for work in turn.after_commit:
            await work()
        log.debug("handled %s from %s: %d replies", inbound.kind, mask(inbound.user_id), len(outgoing))
        return Outcome(replies=turn.replies, message_ids=[m.id for m in outgoing])

    async def _run(self, turn: Turn) -> None:
        """Stages first (they may take the message), then the router, then stages again."""
        for stage in self._stages:
            await stage.before_route(turn)
            if turn.handled:
                break
        if not turn.handled:
            routed = self._router.route(turn.inbound, turn.variables)
            turn.replies.extend(routed.replies)
            turn.match = routed.match
            turn.understood = routed.understood
            if turn.inbound.kind is InboundKind.TEXT:
                streak = turn.conversation.not_understood_streak
                turn.conversation.not_understood_streak = 0 if routed.understood else streak + 1
        for stage in self._stages:
            await stage.after_route(turn)

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
