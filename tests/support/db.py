"""Read what the service stored, through a separate engine, as an operator's query would."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from storage.models import Customer, Event, Message


async def rows(url: str, model: Any, *where: Any, order: Any = None) -> list[Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            query = select(model).where(*where).order_by(order if order is not None else model.id)
            return list((await connection.execute(query)).all())
    finally:
        await engine.dispose()


async def messages(url: str, external_id: str | None = None) -> list[Any]:
    if external_id is None:
        return await rows(url, Message)
    customer = await customer_row(url, external_id)
    return [] if customer is None else await rows(url, Message, Message.customer_id == customer.id,
                                                  order=Message.seq)


async def customer_row(url: str, external_id: str) -> Any:
    found = await rows(url, Customer, Customer.external_id == external_id)
    return found[0] if found else None


async def events(url: str, kind: str | None = None) -> list[Any]:
    return await rows(url, Event, *([Event.kind == kind] if kind else []))


@asynccontextmanager
async def database_held(url: str) -> AsyncIterator[None]:
    """Another writer holds the messages table (on SQLite the whole database): no answer can be
    stored, so none is ready before the deadline."""
    if url.startswith("sqlite"):
        blocker = sqlite3.connect(url.split("///", 1)[1], timeout=30, check_same_thread=False)
        # Waited for in a thread: the app's own start-up writes (token, schedules) may hold the
        # lock for a moment, and they need the event loop to finish.
        await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
        try:
            yield
        finally:
            blocker.rollback()
            blocker.close()
        return
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # EXCLUSIVE lets others read the table but not write it, until the rollback.
                await connection.execute(text("LOCK TABLE messages IN EXCLUSIVE MODE"))
                try:
                    yield
                finally:
                    await connection.rollback()
            else:
                await connection.execute(text("LOCK TABLES messages READ"))  # others read, none write
                try:
                    yield
                finally:
                    await connection.execute(text("UNLOCK TABLES"))
    finally:
        await engine.dispose()
