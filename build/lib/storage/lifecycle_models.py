"""Tables of the lifecycle sweepers: a lease so one sweep of a kind runs at a time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base


class SweepLock(Base):
    """One row per sweeper; holding the lease (until `locked_until`) means running it.

    A lease rather than a session lock: it works alike on SQLite, PostgreSQL and MySQL, and a
    process that dies mid-sweep frees it when the lease runs out.
    """

    __tablename__ = "sweep_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    locked_until: Mapped[datetime | None]
