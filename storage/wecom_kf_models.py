"""Tables of WeCom Customer Service: where each kf account's `sync_msg` pull has got to."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base


class KfCursor(Base):
    """One row per kf account (`open_kfid`).

    `cursor` is the `next_cursor` after the last page whose messages are all stored (None: never
    pulled, so the backlog WeCom still holds is stored without being answered). `holder` and
    `locked_until` are the lease of the one process pulling it; `wanted` says a notification came
    while it pulled (so it pulls again), with the notification's `sync_token`.
    """

    __tablename__ = "wecom_kf_cursors"

    open_kfid: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(String(255))
    sync_token: Mapped[str | None] = mapped_column(String(255))
    wanted: Mapped[bool] = mapped_column(Boolean, default=False)
    holder: Mapped[str | None] = mapped_column(String(128))
    locked_until: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class KfCustomer(Base):
    """Which kf account a customer (`external_userid`) last wrote to: replies and touches go out
    from that account."""

    __tablename__ = "wecom_kf_customers"

    external_userid: Mapped[str] = mapped_column(String(128), primary_key=True)
    open_kfid: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]
