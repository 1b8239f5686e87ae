"""Tables. Storage is the source of truth: every piece of per-customer state lives here."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# BIGINT ids everywhere, but SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    MySQL and SQLite keep no zone, so values are stored as naive UTC (with microseconds).
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else _in_utc(value).replace(tzinfo=None)

    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _in_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:  # the usual case, and converting it is the costly part
        return value
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC)


def _sqlite_text(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DATETIME stores ("2026-01-31 09:30:00.000000"), in one C call:
    the message path binds several datetimes per message."""
    return None if value is None else _in_utc(value).isoformat(" ", "microseconds")[:26]  # without "+00:00"


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class Customer(Base):
    """One customer per channel identity (an openid is per Official Account)."""

    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("channel", "external_id", name="uq_customers_channel_external"),
        Index("ix_customers_unionid", "unionid"),
        Index("ix_customers_phone", "phone"),
        # Business events name a customer by openid alone, whatever the channel.
        Index("ix_customers_external_id", "external_id"),
        Index("ix_customers_purchase_overdue", "purchase_overdue_at"),
        # Room on each page lets PostgreSQL update a customer in place (HOT) when no indexed
        # column changes: every message and the lifecycle sweep update customers.
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    unionid: Mapped[str | None] = mapped_column(String(128))
    phone: Mapped[str | None] = mapped_column(String(32))
    nickname: Mapped[str | None] = mapped_column(String(128))
    stage: Mapped[str] = mapped_column(String(16), default="contact")
    source: Mapped[str | None] = mapped_column(String(128))
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    last_inbound_at: Mapped[datetime | None]
    stage_changed_at: Mapped[datetime | None]
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    points_balance: Mapped[int] = mapped_column(Integer, default=0)
    orders_count: Mapped[int] = mapped_column(Integer, default=0)
    lifetime_spend: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal(0))
    last_order_at: Mapped[datetime | None]
    # Lifecycle (flows/lifecycle.py): the usual interval between orders decides when the next
    # purchase is overdue (at_risk); store visits and carts count as activity against churn.
    first_order_at: Mapped[datetime | None]
    purchase_overdue_at: Mapped[datetime | None]
    last_active_at: Mapped[datetime | None]
    # Consent: a customer who sends 退订/TD gets no marketing touches until they write again.
    marketing_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_changed_at: Mapped[datetime | None]
    # The platform's push window as WeChat counts it: opened by the customer's last action.
    window_expires_at: Mapped[datetime | None]
    window_quota: Mapped[int] = mapped_column(Integer, default=0)
    window_used: Mapped[int] = mapped_column(Integer, default=0)


class Conversation(Base):
    """A customer's thread with the brand; `state` says who answers (bot, queued, staff, closed)."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_customer_state", "customer_id", "state"),
        Index("ix_conversations_state_queued", "state", "queued_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default="bot")
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    not_understood_streak: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Staff takeover (bot/handoff.py): the current escalation, and metrics kept per conversation.
    assigned_staff_id: Mapped[int | None] = mapped_column(BigId)
    escalation_reason: Mapped[str | None] = mapped_column(String(32))
    queued_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    first_staff_response_at: Mapped[datetime | None]
    handling_seconds: Mapped[int] = mapped_column(Integer, default=0)
    wait_message_sent_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]


class Message(Base):
    """Every message in and out. `platform_msg_id` is unique per channel so retries store once."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "platform_msg_id", name="uq_messages_platform_id"),
        UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
        Index("ix_messages_reply_to", "reply_to_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    kind: Mapped[str] = mapped_column(String(32))  # text, image, event, ...
    text: Mapped[str] = mapped_column(Text, default="")
    platform_msg_id: Mapped[str | None] = mapped_column(String(191))
    reply_to_id: Mapped[int | None] = mapped_column(BigId)
    # Lets one flush insert a message and its replies, parent first (no constraint in the schema).
    reply_to: Mapped[Message | None] = relationship(
        primaryjoin="foreign(Message.reply_to_id) == remote(Message.id)", lazy="raise")
    # How an outbound message reached the customer: passive, push, failed, pending.
    delivery: Mapped[str | None] = mapped_column(String(16))
    intent: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class Event(Base):
    """Append-only log of what happened to a customer (subscribe, stage change, order …)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_customer_time", "customer_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime]


class CallbackNonce(Base):
    """A signed callback's (timestamp, nonce) while its signature is still accepted: a reuse with
    another body is a replay (WeChat's plain-mode signature does not cover the body)."""

    __tablename__ = "callback_nonces"
    __table_args__ = (Index("ix_callback_nonces_expires", "expires_at"),)

    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    timestamp: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]


class PlatformToken(Base):
    """Access tokens shared by every process: WeChat invalidates the old one on each fetch.

    `refreshing_by` holds the lease of the one process fetching a new token, until
    `refreshing_until`; nobody else fetches meanwhile.
    """

    __tablename__ = "platform_tokens"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    token: Mapped[str] = mapped_column(String(1024))
    expires_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    refreshing_by: Mapped[str | None] = mapped_column(String(128))
    refreshing_until: Mapped[datetime | None]


class FlowSchedule(Base):
    """When a flow's crontab trigger last fired, so a start that falls during a restart still happens."""

    __tablename__ = "flow_schedules"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)  # flow name and trigger position
    crontab: Mapped[str] = mapped_column(String(128))
    last_fired_at: Mapped[datetime]  # the firing last claimed, or when the schedule was first seen
    updated_at: Mapped[datetime]


class StageChange(Base):
    """Every lifecycle move (when, from, to, why): funnels, cohorts and retention come from here."""

    __tablename__ = "stage_changes"
    __table_args__ = (Index("ix_stage_changes_customer", "customer_id", "occurred_at"),
                      Index("ix_stage_changes_time", "occurred_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(255))
    occurred_at: Mapped[datetime]


class BusinessEvent(Base):
    """Orders, carts, points and visits from the brand's systems; the event id makes them idempotent."""

    __tablename__ = "business_events"
    __table_args__ = (Index("ix_business_events_customer", "customer_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_customer", "customer_id", "paid_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))  # paid, delivered, refunded
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    paid_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    refunded_at: Mapped[datetime | None]


class PointsEntry(Base):
    """The points ledger. Earned rows keep `remaining` so spending and expiry use oldest first."""

    __tablename__ = "points_ledger"
    __table_args__ = (Index("ix_points_customer", "customer_id", "occurred_at"),
                      Index("ix_points_expiry", "expires_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # earn, spend, expire, adjust
    delta: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(255), default="")
    expires_at: Mapped[datetime | None]
    occurred_at: Mapped[datetime]
    source_event_id: Mapped[str | None] = mapped_column(String(128))


class SurveyResponse(Base):
    __tablename__ = "survey_responses"
    __table_args__ = (Index("ix_survey_customer", "customer_id", "answered_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    flow_run_id: Mapped[int | None] = mapped_column(BigId)
    question: Mapped[str] = mapped_column(String(32))  # csat, nps, comment, …
    score: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime]


class FlowVersion(Base):
    """The exact definition of each flow version, so a customer finishes the version they entered."""

    __tablename__ = "flow_versions"
    __table_args__ = (UniqueConstraint("flow", "version", name="uq_flow_versions"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    flow: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]


# A run in one of these is open: it still waits for the customer, a time or its next step.
OPEN_RUN_STATUSES = ("active", "waiting", "asking")


class FlowRun(Base):
    """A customer's place in a flow; a restart continues from here."""

    __tablename__ = "flow_runs"
    __table_args__ = (Index("ix_flow_runs_due", "status", "wake_at"),
                      Index("ix_flow_runs_customer", "customer_id", "status"),
                      Index("ix_flow_runs_flow", "flow", "customer_id", "started_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    flow: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # active, waiting, asking, completed, exited
    step: Mapped[str] = mapped_column(String(64))
    wake_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    trigger: Mapped[str] = mapped_column(String(128), default="")
    end_reason: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class Touch(Base):
    """One proactive message: a row with a due time, claimed with a lease, ending sent/skipped/failed."""

    __tablename__ = "touches"
    __table_args__ = (Index("ix_touches_due", "status", "due_at"),
                      Index("ix_touches_customer", "customer_id", "status"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    flow_run_id: Mapped[int | None] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(16))  # service, marketing
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    template: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    defer_when_capped: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str] = mapped_column(String(191), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, sent, skipped, failed
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
