"""The conversation state machine on every backend, and the business-hours texts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.console.auth import add_staff
from bot.console.hours import describe, escalation_notice, is_open, next_open, wait_notice
from bot.console.settings import BusinessHours, StaffSettings
from flows import handoff
from flows.handoff import Reason, TransitionError
from storage import conversations as store
from storage.db import make_engine, make_sessionmaker
from storage.models import Conversation
from storage.staff_models import ConversationChange

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # Wednesday 10:00 in Shanghai


@pytest.fixture
async def sessions(backend_url):
    engine = make_engine(backend_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def _setup(sessions, staff: int = 2) -> tuple[int, int, list[int]]:
    async with sessions() as session, session.begin():
        customer = store.new_customer("simulator", "alice", NOW)
        session.add(customer)
        await session.flush()
        conversation = await store.current_conversation(session, customer, NOW)
        ids = [(await add_staff(session, f"staff{i}", "staff", "password123", NOW)).id for i in range(staff)]
        return customer.id, conversation.id, ids


async def test_escalate_claim_hand_back_and_close_record_every_change(sessions):
    customer_id, conversation_id, (lin, li) = await _setup(sessions)
    async with sessions() as session, session.begin():
        conversation = await session.get(Conversation, conversation_id)
        assert await handoff.escalate(session, conversation, Reason.COMPLAINT, "bot", NOW)
        assert not await handoff.escalate(session, conversation, Reason.COMPLAINT, "bot", NOW)  # already queued
        assert await handoff.held_by_staff(session, customer_id)
    async with sessions() as session, session.begin():
        claimed = await handoff.claim(session, conversation_id, lin, NOW + timedelta(seconds=30))
        assert claimed.state == "staff" and claimed.assigned_staff_id == lin
    async with sessions() as session, session.begin():
        with pytest.raises(TransitionError):
            await handoff.hand_back(session, conversation_id, li, NOW)  # not li's chat
    async with sessions() as session, session.begin():
        conversation = await session.get(Conversation, conversation_id)
        handoff.record_staff_reply(conversation, NOW + timedelta(seconds=45))
        back = await handoff.hand_back(session, conversation_id, lin, NOW + timedelta(seconds=90))
        assert back.state == "bot" and back.handling_seconds == 60
        assert handoff.first_response_seconds(back) == 45
        assert not await handoff.held_by_staff(session, customer_id)
    async with sessions() as session, session.begin():
        conversation = await session.get(Conversation, conversation_id)
        assert await handoff.escalate(session, conversation, Reason.LOW_SCORE, "flow:survey", NOW)
    async with sessions() as session, session.begin():
        closed = await handoff.close(session, conversation_id, li, NOW)  # a queued chat anyone may close
        assert closed.state == "closed" and closed.closed_at is not None
    async with sessions() as session:
        changes = (await session.execute(
            select(ConversationChange).order_by(ConversationChange.id))).scalars().all()
    assert [(c.from_state, c.to_state, c.reason, c.actor) for c in changes] == [
        ("bot", "queued", "complaint", "bot"),
        ("queued", "staff", "complaint", f"staff:{lin}"),
        ("staff", "bot", "handed_back", f"staff:{lin}"),
        ("bot", "queued", "low_score", "flow:survey"),
        ("queued", "closed", "closed", f"staff:{li}"),
    ]


async def test_of_many_simultaneous_claims_exactly_one_wins(sessions, backend_url):
    _, conversation_id, staff = await _setup(sessions, staff=5)
    async with sessions() as session, session.begin():
        conversation = await session.get(Conversation, conversation_id)
        await handoff.escalate(session, conversation, Reason.CUSTOMER_REQUEST, "bot", NOW)

    async def try_claim(staff_id: int) -> bool:
        try:
            async with sessions() as session, session.begin():
                await handoff.claim(session, conversation_id, staff_id, NOW)
            return True
        except TransitionError:
            return False

    won = await asyncio.gather(*(try_claim(s) for s in staff))
    assert sum(won) == 1
    async with sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation.assigned_staff_id == staff[won.index(True)]


def test_business_hours_and_the_next_opening():
    hours = BusinessHours(days=[1, 2, 3, 4, 5], open="09:00", close="18:00")
    assert describe(hours) == "周一至周五 09:00–18:00"
    assert is_open(hours, NOW)
    friday_evening = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)  # 19:00 Friday in Shanghai
    assert not is_open(hours, friday_evening)
    assert next_open(hours, friday_evening) == datetime(2026, 11, 30, 1, 0, tzinfo=UTC)  # Monday 09:00


def test_customers_are_told_honestly_when_a_person_answers():
    settings = StaffSettings(hours=BusinessHours(days=[1, 2, 3, 4, 5], open="09:00", close="18:00"))
    assert escalation_notice(settings, NOW) == settings.escalated_text
    friday_evening = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
    notice = escalation_notice(settings, friday_evening)
    assert "周一至周五 09:00–18:00" in notice and "周一（11月30日）09:00" in notice
    assert "周一（11月30日）09:00" in wait_notice(settings, friday_evening)
    assert wait_notice(settings, NOW) == settings.wait_text
