"""What the console shows: the queue, a chat's transcript and the customer's profile, as JSON."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.console.auth import Identity
from flows.handoff import State, first_response_seconds
from storage.models import Conversation, Customer, Message, Order, PointsEntry, SurveyResponse
from storage.privacy import mask
from storage.staff_models import ConversationChange, StaffAccount

TRANSCRIPT_LIMIT = 200
QUEUE_LIMIT = 200  # per list of the queue view


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


async def _names(session: AsyncSession) -> dict[int, str]:
    return dict((await session.execute(select(StaffAccount.id, StaffAccount.name))).all())


def may_view(identity: Identity, conversation: Conversation) -> bool:
    """Staff see the queue and their own chats; operators and admins see every chat."""
    if identity.sees_all:
        return True
    return conversation.state == State.QUEUED or (
        conversation.state == State.STAFF and conversation.assigned_staff_id == identity.staff_id)


async def queue(session: AsyncSession, identity: Identity) -> dict[str, Any]:
    """The oldest QUEUE_LIMIT queued chats and up to QUEUE_LIMIT held by staff: a backlog of
    thousands is not read (nor sent to the browser) on every refresh."""
    rows: list[Row[Conversation, Customer]] = []
    for state in (State.QUEUED, State.STAFF):
        query = (select(Conversation, Customer).join(Customer, Customer.id == Conversation.customer_id)
                 .where(Conversation.state == state).order_by(Conversation.queued_at, Conversation.id)
                 .limit(QUEUE_LIMIT))
        if state == State.STAFF and not identity.sees_all:
            query = query.where(Conversation.assigned_staff_id == identity.staff_id)
        rows.extend((await session.execute(query)).all())
    ids = [c.id for c, _ in rows]
    last: dict[int, str] = {}
    if ids:
        newest = (select(Message.conversation_id, func.max(Message.id).label("id"))
                  .where(Message.conversation_id.in_(ids), Message.direction == "in")
                  .group_by(Message.conversation_id).subquery())
        found = await session.execute(select(Message.conversation_id, Message.text)
                                      .join(newest, Message.id == newest.c.id))
        last = dict(found.all())
    names = await _names(session)
    items = [_summary(c, cu, names, last.get(c.id, "")) for c, cu in rows]
    return {
        "queued": [i for i in items if i["state"] == State.QUEUED],
        "mine": [i for i in items if i["state"] == State.STAFF and i["assigned_staff_id"] == identity.staff_id],
        "others": [i for i in items if i["state"] == State.STAFF and i["assigned_staff_id"] != identity.staff_id],
    }


def _summary(c: Conversation, customer: Customer, names: dict[int, str], last_text: str) -> dict[str, Any]:
    return {
        "id": c.id, "state": c.state, "reason": c.escalation_reason, "queued_at": iso(c.queued_at),
        "claimed_at": iso(c.claimed_at), "assigned_staff_id": c.assigned_staff_id,
        "assigned_staff": names.get(c.assigned_staff_id or 0), "customer": display_name(customer),
        "channel": customer.channel, "last_text": last_text[:80], "updated_at": iso(c.updated_at),
    }


def display_name(customer: Customer) -> str:
    if customer.nickname:
        return customer.nickname
    # Simulator users are made-up names; platform ids are masked as in the logs.
    return customer.external_id if customer.channel == "simulator" else f"{customer.channel}:{mask(customer.external_id)}"


async def recent(session: AsyncSession, limit: int = 100) -> list[dict[str, Any]]:
    """Every recent conversation, any state (operators and admins)."""
    rows = (await session.execute(
        select(Conversation, Customer).join(Customer, Customer.id == Conversation.customer_id)
        .order_by(Conversation.updated_at.desc()).limit(limit)
    )).all()
    names = await _names(session)
    return [_summary(c, cu, names, "") for c, cu in rows]


def _visible_conversations(identity: Identity, conversation: Conversation) -> Any:
    """The customer's conversations this person may read in the transcript: operators and admins
    all of them; staff the one in front of them and the earlier ones they handled themselves
    (claimed, so another staff member's conversation with the customer stays theirs)."""
    handled = select(ConversationChange.conversation_id).where(ConversationChange.staff_id == identity.staff_id)
    return select(Conversation.id).where(
        Conversation.customer_id == conversation.customer_id,
        or_(Conversation.id == conversation.id, Conversation.assigned_staff_id == identity.staff_id,
            Conversation.id.in_(handled)))


async def chat(session: AsyncSession, conversation: Conversation, identity: Identity) -> dict[str, Any]:
    customer = await session.get(Customer, conversation.customer_id)
    assert customer is not None
    names = await _names(session)
    query = select(Message).where(Message.customer_id == customer.id)
    if not identity.sees_all:
        query = query.where(Message.conversation_id.in_(_visible_conversations(identity, conversation)))
    messages = list((await session.execute(
        query.order_by(Message.id.desc()).limit(TRANSCRIPT_LIMIT)
    )).scalars())[::-1]
    changes = list((await session.execute(
        select(ConversationChange).where(ConversationChange.conversation_id == conversation.id)
        .order_by(ConversationChange.id)
    )).scalars())
    return {
        "conversation": {
            **_summary(conversation, customer, names, ""),
            "first_staff_response_at": iso(conversation.first_staff_response_at),
            "first_response_seconds": first_response_seconds(conversation),
            "handling_seconds": conversation.handling_seconds, "closed_at": iso(conversation.closed_at),
        },
        "messages": [message_view(m, names) for m in messages],
        "changes": [{"from": c.from_state, "to": c.to_state, "reason": c.reason, "by": c.actor,
                     "staff": names.get(c.staff_id or 0), "at": iso(c.occurred_at)} for c in changes],
        "profile": await profile(session, customer),
    }


def message_view(m: Message, names: dict[int, str] | None = None) -> dict[str, Any]:
    payload = m.payload or {}
    staff_id = payload.get("staff_id")
    return {
        "id": m.id, "conversation_id": m.conversation_id, "direction": m.direction, "kind": m.kind,
        "text": m.text or ("" if m.kind == "text" else f"[{m.kind}]"),
        "source": payload.get("source"), "staff": (names or {}).get(staff_id) if staff_id else None,
        "delivery": m.delivery, "error": payload.get("error"), "at": iso(m.created_at),
    }


async def profile(session: AsyncSession, customer: Customer) -> dict[str, Any]:
    orders = (await session.execute(
        select(Order).where(Order.customer_id == customer.id).order_by(Order.paid_at.desc()).limit(5)
    )).scalars()
    points = (await session.execute(
        select(PointsEntry).where(PointsEntry.customer_id == customer.id)
        .order_by(PointsEntry.occurred_at.desc()).limit(5)
    )).scalars()
    surveys = (await session.execute(
        select(SurveyResponse).where(SurveyResponse.customer_id == customer.id)
        .order_by(SurveyResponse.answered_at.desc()).limit(10)
    )).scalars()
    return {
        "name": display_name(customer), "channel": customer.channel, "stage": customer.stage,
        "tags": list(customer.tags or []), "points": customer.points_balance,
        "orders_count": customer.orders_count, "lifetime_spend": _plain(customer.lifetime_spend),
        "source": customer.source, "subscribed": customer.subscribed,
        "marketing_opt_out": customer.marketing_opt_out, "since": iso(customer.created_at),
        "orders": [{"order_id": o.order_id, "status": o.status, "amount": _plain(o.amount),
                    "paid_at": iso(o.paid_at)} for o in orders],
        "points_changes": [{"delta": p.delta, "reason": p.reason, "at": iso(p.occurred_at)} for p in points],
        "surveys": [{"question": s.question, "score": s.score, "text": s.text, "at": iso(s.answered_at)}
                    for s in surveys],
    }


async def staff_list(session: AsyncSession) -> list[dict[str, Any]]:
    accounts = (await session.execute(select(StaffAccount).order_by(StaffAccount.id))).scalars()
    return [{"id": a.id, "name": a.name, "role": a.role, "active": a.active,
             "last_login_at": iso(a.last_login_at), "locked_until": iso(a.locked_until)} for a in accounts]


async def change_marker(session: AsyncSession) -> tuple[int, int]:
    """Cheap fingerprint of what the console shows; it moves when another process changes it."""
    changes = (await session.execute(select(func.max(ConversationChange.id)))).scalar() or 0
    messages = (await session.execute(select(func.max(Message.id)))).scalar() or 0
    return changes, messages
