"""Fixtures for the outbox: a session factory on each backend and customers to touch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.conversations import new_customer
from storage.db import make_engine, make_sessionmaker

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


@pytest.fixture
async def sessions(backend_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(backend_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def add_customer(sessions: async_sessionmaker[AsyncSession], external_id: str = "o-alice",
                       channel: str = "wechat_mp", **fields: Any) -> int:
    async with sessions() as session, session.begin():
        customer = new_customer(channel, external_id, fields.pop("created_at", T0), **fields)
        session.add(customer)
        await session.flush()
        return customer.id
