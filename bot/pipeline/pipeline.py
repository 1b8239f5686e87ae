"""One path for every inbound: lock the customer → open their turn → middlewares → route → store
the answer; retries are recognised by the unique platform message id.

The customer lock is taken before any state is read, so two messages of one customer never see
the same conversation state. Saving the turn is the store's (storage.turns): one transaction
per message, with a commit delay shared by waiting messages on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.pipeline.customer_locks import CustomerLocks
from bot.pipeline.outcome import Outcome
from bot.pipeline.saves import SaveOutcomes
from flows.consent import source_of
from flows.turn import DecisionActor, Middleware, Next, Turn
from flows.variables import DEFAULT_NICKNAME
from handlers.messages import Inbound, Reply
from handlers.router import Router
from storage.conversations import NewMessage
from storage.db import is_retryable
from storage.privacy import mask
from storage.turns import MAX_BATCH, Arrival, CommitStats, OpenTurn, make_turn_store, stored_replies

log = logging.getLogger(__name__)

_ATTEMPTS = 3
# Messages accepted but not answered yet (waiting for their customer, queued or being stored).
# Beyond this the pipeline refuses new ones at once instead of letting the backlog, and every
# caller's wait, grow without limit; the platform delivers them again later.
MAX_IN_FLIGHT = 2000


class PipelineOverloaded(Exception):
    """More messages are waiting than the pipeline takes on; nothing of this one was stored."""


@dataclass
class PipelineStats(CommitStats):
    handled: int = 0
    duplicates: int = 0
    not_understood: int = 0
    overloaded: int = 0


@dataclass
class _Done:
    outcome: Outcome
    after_commit: list[Callable[[], Awaitable[None]]]


class Pipeline:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], router: Router, clock: Clock,
                 middlewares: Sequence[Middleware] = (), *, group_commit: bool | None = None,
                 max_in_flight: int = MAX_IN_FLIGHT, max_batch: int = MAX_BATCH):
        """`middlewares` run outermost first; the innermost step routes and acts on the decision."""
        self._sessions = sessions
        self._router = router
        self._clock = clock
        self._middlewares = list(middlewares)
        self._actors = [m for m in self._middlewares if isinstance(m, DecisionActor)]
        self._nexts: list[Next] = [partial(self._through, index=i) for i in range(1, len(self._middlewares) + 1)]
        self._locks = CustomerLocks()
        self.stats = PipelineStats()
        self.saves = SaveOutcomes()  # read by /healthz
        self._store = make_turn_store(sessions, group_commit=group_commit, stats=self.stats, max_batch=max_batch)
        self.max_in_flight = max_in_flight
        self._in_flight = 0

    @property
    def overloaded(self) -> bool:
        """Whether `handle` would refuse a message now (a channel may answer before parsing further)."""
        return self._in_flight >= self.max_in_flight

    async def handle(self, inbound: Inbound) -> Outcome:
        """Handle one message and wait for its outcome."""
        self._admit()
        return await self._handle_admitted(inbound)

    def start(self, inbound: Inbound) -> asyncio.Future[Outcome]:
        """Begin handling one message; its outcome arrives in the future, waited for or not.

        For a caller that may stop waiting (a callback's reply deadline) while the work goes on.
        """
        try:
            self._admit()
        except PipelineOverloaded as error:
            refused: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            refused.set_exception(error)
            return refused
        return asyncio.ensure_future(self._handle_admitted(inbound))

    async def close(self) -> None:
        """Let the store finish what it was handed (before the engine is disposed)."""
        await self._store.close()

    def _admit(self) -> None:
        if self.overloaded:
            self.stats.overloaded += 1
            raise PipelineOverloaded(f"{self._in_flight} messages in flight")
        self._in_flight += 1

    async def _handle_admitted(self, inbound: Inbound) -> Outcome:
        try:
            async with self._locks.hold(inbound.customer_key):
                done = await self._handle_one(inbound)
                for work in done.after_commit:
                    await work()
                return done.outcome
        finally:
            self._in_flight -= 1

    async def _handle_one(self, inbound: Inbound) -> _Done:
        channel, user_id = inbound.customer_key
        for attempt in range(1, _ATTEMPTS + 1):
            arrival = Arrival(channel, user_id, self._clock.now(), unionid=inbound.unionid,
                              source=source_of(inbound))
            try:
                turn, outgoing = await self._store.save(arrival, partial(self._take, inbound, arrival.now))
                self.saves.saved()
                return self._done(turn, outgoing)
            except IntegrityError as error:
                # Either a retry of a stored delivery, or another process created this
                # customer first: look again with the row now there.
                duplicate = await self._duplicate_outcome(inbound)
                if duplicate is not None:
                    return _Done(duplicate, [])
                if attempt == _ATTEMPTS:
                    self.saves.failed(error)
                    raise
            except DBAPIError as error:
                if not is_retryable(error) or attempt == _ATTEMPTS:
                    self.saves.failed(error)
                    raise
                log.info("retrying %s after %s", mask(inbound.user_id), type(error.orig).__name__)
            except OSError as error:  # the database's file or socket
                self.saves.failed(error)
                raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ inside the turn's transaction

    async def _take(self, inbound: Inbound, now: datetime, opened: OpenTurn) -> tuple[Turn, list[NewMessage]]:
        """Number the inbound, let the middlewares and the router answer it, hand the rows over."""
        customer, conversation = opened.customer, opened.conversation
        conversation.last_seq += 1
        incoming = NewMessage(
            conversation_id=conversation.id, customer_id=customer.id, seq=conversation.last_seq,
            channel=inbound.channel, direction="in", kind=str(inbound.kind), text=inbound.text,
            platform_msg_id=inbound.dedup_key, payload=inbound.payload, created_at=inbound.received_at,
        )
        turn = Turn(session=opened.session, inbound=inbound, customer=customer, conversation=conversation,
                    message=incoming, now=now, variables={"nickname": customer.nickname or DEFAULT_NICKNAME})
        await self._through(turn, index=0)
        incoming.intent = turn.match.intent if turn.match else None
        outgoing = _passive_reply_rows(turn)
        opened.messages.extend([incoming, *outgoing])
        conversation.updated_at = now
        return turn, outgoing

    async def _through(self, turn: Turn, index: int) -> None:
        """Middleware `index`, given the rest of the chain as its `next`; past the last, routing."""
        if index < len(self._middlewares):
            await self._middlewares[index](turn, self._nexts[index])
        else:
            await self._respond(turn)

    async def _respond(self, turn: Turn) -> None:
        """The innermost step: route, and act on the decision in this one place.

        A middleware that carries out decisions (flows, handoff) is offered it first, in order;
        when none does, the decision's replies are the answer.
        """
        decision = self._router.route(turn.inbound, turn.variables)
        turn.decision = decision
        for actor in self._actors:
            if await actor.act(turn, decision):
                return
        turn.replies.extend(decision.replies)

    # ------------------------------------------------------------ after commit

    def _done(self, turn: Turn, outgoing: list[NewMessage]) -> _Done:
        """Count it and hand back the answer (the rows have their ids now)."""
        self.stats.handled += 1
        if not turn.understood:
            self.stats.not_understood += 1
        if log.isEnabledFor(logging.DEBUG):  # masking is not free, and runs for every message
            log.debug("handled %s from %s: %d replies", turn.inbound.kind, mask(turn.inbound.user_id), len(outgoing))
        return _Done(Outcome(replies=turn.replies, message_ids=[m.id for m in outgoing if m.id is not None]),
                     turn.after_commit)

    async def _duplicate_outcome(self, inbound: Inbound) -> Outcome | None:
        if not inbound.dedup_key:
            return None
        replies = await stored_replies(self._sessions, inbound.channel, inbound.dedup_key)
        if replies is None:
            return None
        self.stats.duplicates += 1
        return Outcome(
            replies=[Reply(m.text, intent=m.intent) for m in replies],
            message_ids=[m.id for m in replies],
            duplicate=True,
            delivery=replies[0].delivery if replies else None,
        )


def _passive_reply_rows(turn: Turn) -> list[NewMessage]:
    """The turn's replies as outgoing rows, each the conversation's next, answering its inbound."""
    conversation = turn.conversation
    rows = []
    for reply in turn.replies:
        conversation.last_seq += 1
        rows.append(NewMessage(
            conversation_id=conversation.id, customer_id=turn.customer.id, seq=conversation.last_seq,
            channel=turn.inbound.channel, direction="out", kind="text", text=reply.text,
            reply_to=turn.message, delivery="passive", intent=reply.intent,
            payload={"source": reply.source}, created_at=turn.now,
        ))
    return rows
