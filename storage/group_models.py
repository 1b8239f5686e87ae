"""Tables of customer groups: the groups, who is (or was) in them, what happened in them, and
each group's figures per day."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId


class ChatGroup(Base):
    """One group on one channel (the gateway's group id is `external_id`)."""

    __tablename__ = "chat_groups"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_chat_groups_channel_external"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128), default="")
    member_count: Mapped[int] = mapped_column(Integer, default=0)  # in the group now
    welcome_post_id: Mapped[int | None] = mapped_column(BigId)  # its latest welcome (gathering until claimed)
    created_at: Mapped[datetime]
    last_activity_at: Mapped[datetime]


class GroupMembership(Base):
    """A member in a group: when they joined and left. The member is a customer of the group's
    channel, keyed by the gateway's member id."""

    __tablename__ = "group_memberships"
    __table_args__ = (UniqueConstraint("group_id", "member_id", name="uq_group_memberships_member"),
                      Index("ix_group_memberships_customer", "customer_id"),
                      Index("ix_group_memberships_welcome", "welcome_post_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("chat_groups.id", ondelete="CASCADE"))
    member_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(8))  # joined | left
    joined_at: Mapped[datetime | None]  # None: seen speaking before any join event
    left_at: Mapped[datetime | None]
    last_spoke_on: Mapped[date | None] = mapped_column(Date)  # local day of their last message
    welcome_post_id: Mapped[int | None] = mapped_column(BigId)  # the welcome gathering them


class GroupEntry(Base):
    """Everything that happened in a group, in order: members' messages, joins and leaves (with
    the gateway's event id, unique, so a retry is stored once) and what the bot posted there
    (answers, notes, welcomes; a welcome is sent from here when it is due)."""

    __tablename__ = "group_log"
    __table_args__ = (UniqueConstraint("channel", "event_id", name="uq_group_log_event"),
                      Index("ix_group_log_group", "group_id", "id"),
                      Index("ix_group_log_due", "delivery", "due_at"),
                      Index("ix_group_log_customer", "customer_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str | None] = mapped_column(String(128))
    group_id: Mapped[int] = mapped_column(ForeignKey("chat_groups.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # message, join, leave | answer, note, welcome
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    member_id: Mapped[str | None] = mapped_column(String(128))  # who wrote, or whom the bot answered
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    members: Mapped[list[str]] = mapped_column(JSON, default=list)  # joined / left / mentioned
    text: Mapped[str] = mapped_column(Text, default="")
    addressed: Mapped[bool] = mapped_column(Boolean, default=False)  # a message to the bot
    # What the bot posted: passive (in the hook's answer), pending (due_at), sending, sent, failed.
    delivery: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class GroupDay(Base):
    """A group's figures for one local day: members at the end of it (so far), joins, leaves,
    messages, members who spoke, and messages the bot answered."""

    __tablename__ = "group_daily_stats"

    group_id: Mapped[int] = mapped_column(ForeignKey("chat_groups.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    members: Mapped[int] = mapped_column(Integer, default=0)
    joins: Mapped[int] = mapped_column(Integer, default=0)
    leaves: Mapped[int] = mapped_column(Integer, default=0)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    speakers: Mapped[int] = mapped_column(Integer, default=0)
    answers: Mapped[int] = mapped_column(Integer, default=0)
