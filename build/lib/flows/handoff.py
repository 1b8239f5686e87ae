"""Who answers a conversation: the bot, the queue, one staff member — and every change, recorded.

States: `bot` → `queued` (escalated) → `staff` (claimed by one person) → `bot` (handed back), or
`closed` from `queued`/`staff`. Claiming is one conditional UPDATE, so two people clicking the
same chat cannot both get it, in one process or many. Each change is stored with who and when
in `conversation_changes`; time to first staff response and handling time stay on the row.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import conversations as store
from storage.models import Conversation, Customer
from storage.staff_models import ConversationChange


class State(StrEnum):
    BOT = "bot"
    QUEUED = "queued"
    STAFF = "staff"
    CLOSED = "closed"


class Reason(StrEnum):
    CUSTOMER_REQUEST = "customer_request"  # 转人工, 人工客服 …
    COMPLAINT = "complaint"
    NOT_UNDERSTOOD = "not_understood"  # N messages in a row
    LOW_SCORE = "low_score"  # a low survey score (flows)
    VIP = "vip"


HELD_STATES = (State.QUEUED, State.STAFF)


class TransitionError(Exception):
    """A change the conversation's current state does not allow; `message` is shown to staff."""

    def __init__(self, message: str, current: str | None = None):
        super().__init__(message)
        self.message = message
        self.current = current


def staff_actor(staff_id: int) -> str:
    return f"staff:{staff_id}"


def _record(session: AsyncSession, conversation_id: int, from_state: str, to_state: str, *, reason: str | None,
            by: str, staff_id: int | None, now: datetime, data: dict[str, Any] | None = None) -> None:
    session.add(ConversationChange(conversation_id=conversation_id, from_state=from_state, to_state=to_state,
                                   reason=reason, actor=by, staff_id=staff_id, data=data or {}, occurred_at=now))


async def escalate(session: AsyncSession, conversation: Conversation, reason: str, by: str,
                   now: datetime) -> bool:
    """Put a bot conversation in the staff queue. False when people already have it (or it closed).

    Call it inside the transaction that holds the customer's lock (the pipeline's, a flow's).
    """
    if conversation.state != State.BOT:
        return False
    conversation.state = State.QUEUED
    conversation.escalation_reason = reason
    conversation.queued_at = now
    conversation.assigned_staff_id = None
    conversation.claimed_at = None
    conversation.first_staff_response_at = None
    conversation.wait_message_sent_at = None
    conversation.not_understood_streak = 0
    conversation.updated_at = now
    _record(session, conversation.id, State.BOT, State.QUEUED, reason=reason, by=by, staff_id=None, now=now)
    await session.flush()
    return True


async def escalate_customer(session: AsyncSession, customer: Customer, reason: str, by: str,
                            now: datetime) -> Conversation | None:
    """Escalate the customer's open conversation (started if none); None if already with people."""
    conversation = await store.current_conversation(session, customer, now)
    return conversation if await escalate(session, conversation, reason, by, now) else None


async def claim(session: AsyncSession, conversation_id: int, staff_id: int, now: datetime) -> Conversation:
    """Take a queued chat. Atomic: of two people claiming at once, exactly one succeeds."""
    result = await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.state == State.QUEUED)
        .values(state=State.STAFF, assigned_staff_id=staff_id, claimed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    conversation = await _load(session, conversation_id)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        if conversation.state == State.STAFF:
            raise TransitionError("已被其他客服接入", conversation.state)
        raise TransitionError("该会话不在排队中", conversation.state)
    _record(session, conversation_id, State.QUEUED, State.STAFF, reason=conversation.escalation_reason,
            by=staff_actor(staff_id), staff_id=staff_id, now=now,
            data={"wait_seconds": _seconds(conversation.queued_at, now)})
    await session.flush()
    return conversation


async def hand_back(session: AsyncSession, conversation_id: int, staff_id: int, now: datetime, *,
                    any_assignee: bool = False) -> Conversation:
    """Give a chat back to the bot. Only its assignee may, unless `any_assignee` (operators)."""
    conversation = await _locked(session, conversation_id)
    if conversation.state != State.STAFF:
        raise TransitionError("该会话当前不由客服接待", conversation.state)
    _check_assignee(conversation, staff_id, any_assignee)
    data = _release(conversation, now)
    conversation.state = State.BOT
    conversation.assigned_staff_id = None
    conversation.not_understood_streak = 0
    _record(session, conversation_id, State.STAFF, State.BOT, reason="handed_back", by=staff_actor(staff_id),
            staff_id=staff_id, now=now, data=data)
    await session.flush()
    return conversation


async def close(session: AsyncSession, conversation_id: int, staff_id: int, now: datetime, *,
                any_assignee: bool = False) -> Conversation:
    """End a queued or staffed chat. The customer's next message starts a new conversation.

    A `conversation_closed` event goes to the customer's event log: the CSAT flow starts from it.
    """
    conversation = await _locked(session, conversation_id)
    if conversation.state not in HELD_STATES:
        raise TransitionError("该会话无法结束", conversation.state)
    if conversation.state == State.STAFF:
        _check_assignee(conversation, staff_id, any_assignee)
    from_state = conversation.state
    data = _release(conversation, now)
    conversation.state = State.CLOSED
    conversation.closed_at = now
    _record(session, conversation_id, from_state, State.CLOSED, reason="closed", by=staff_actor(staff_id),
            staff_id=staff_id, now=now, data=data)
    store.log_event(session, conversation.customer_id, "conversation_closed", now,
                    {"conversation_id": conversation_id, "staff_id": staff_id,
                     "escalation_reason": conversation.escalation_reason, **data})
    await session.flush()
    return conversation


def record_staff_reply(conversation: Conversation, now: datetime) -> None:
    """The first staff answer of an escalation fixes its time to first response."""
    if conversation.first_staff_response_at is None:
        conversation.first_staff_response_at = now
    conversation.updated_at = now


async def held_by_staff(session: AsyncSession, customer_id: int) -> bool:
    """True while people have (or are about to take) the customer's chat: the bot stays quiet."""
    found = await session.execute(
        select(Conversation.id)
        .where(Conversation.customer_id == customer_id, Conversation.state.in_(list(HELD_STATES)))
        .limit(1)
    )
    return found.first() is not None


def first_response_seconds(conversation: Conversation) -> int | None:
    return _seconds(conversation.queued_at, conversation.first_staff_response_at)


def _release(conversation: Conversation, now: datetime) -> dict[str, Any]:
    """Close an escalation's books: handling time adds up over the conversation's escalations."""
    handled = _seconds(conversation.claimed_at, now) if conversation.state == State.STAFF else None
    if handled is not None:
        conversation.handling_seconds = (conversation.handling_seconds or 0) + handled
    conversation.updated_at = now
    return {"first_response_seconds": first_response_seconds(conversation), "handling_seconds": handled,
            "assigned_staff_id": conversation.assigned_staff_id}


def _check_assignee(conversation: Conversation, staff_id: int, any_assignee: bool) -> None:
    if not any_assignee and conversation.assigned_staff_id != staff_id:
        raise TransitionError("该会话由其他客服接待", conversation.state)


def _seconds(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start).total_seconds()))


async def _load(session: AsyncSession, conversation_id: int) -> Conversation:
    conversation = (await session.execute(
        select(Conversation).where(Conversation.id == conversation_id).execution_options(populate_existing=True)
    )).scalar_one_or_none()
    if conversation is None:
        raise TransitionError("会话不存在")
    return conversation


async def _locked(session: AsyncSession, conversation_id: int) -> Conversation:
    conversation = (await session.execute(
        select(Conversation).where(Conversation.id == conversation_id)
        .with_for_update().execution_options(populate_existing=True)
    )).scalar_one_or_none()
    if conversation is None:
        raise TransitionError("会话不存在")
    return conversation
