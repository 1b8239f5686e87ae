"""Business events from the brand's systems (orders, carts, points, profiles, store visits).

One event is applied in one transaction: idempotent by its id, the customer matched by openid,
unionid or phone (an unknown openid creates the customer), its effects on orders, points and
the lifecycle, then the flow engine's reaction. A bad event is reported and never stops the
others. Both `POST /api/v1/events` and `siyu import` come through `ingest`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import case, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flows import lifecycle, points
from flows.lifecycle_settings import LifecycleSettings, PointsSettings
from flows.reactions import NoReactions, Reactions
from flows.timezones import ZoneName
from handlers.untrusted import BadInput, check_json
from storage.conversations import log_event, new_customer
from storage.db import is_retryable, storage_unavailable
from storage.models import BusinessEvent, Customer, Order
from storage.privacy import mask

log = logging.getLogger(__name__)

EVENT_TYPES = ("order_paid", "order_delivered", "order_refunded", "cart_abandoned", "points_changed",
               "profile_updated", "store_visit")
EventType = Literal["order_paid", "order_delivered", "order_refunded", "cart_abandoned",
                    "points_changed", "profile_updated", "store_visit"]
NEW_CUSTOMER_CHANNEL = "wechat_mp"
_ATTEMPTS = 3
# When an event may have happened: every date computed from it (expiry, overdue purchases)
# stays representable, and a typo such as year 1 or 9999 is refused instead of stored.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# One points change: a 32-bit ledger entry (see flows.points.MAX_BALANCE for the balance).
MAX_POINTS_DELTA = 10**9
# customers.lifetime_spend is NUMERIC(12, 2).
MAX_LIFETIME_SPEND = Decimal("9999999999.99")


class EventError(ValueError):
    """One event cannot be applied; `field` names the offending field (data.amount, customer …)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


# ---- the format ------------------------------------------------------------------------------


class CustomerRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    openid: str | None = Field(None, min_length=1, max_length=128)
    unionid: str | None = Field(None, min_length=1, max_length=128)
    phone: str | None = Field(None, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _someone(self) -> CustomerRef:
        if not (self.openid or self.unionid or self.phone):
            raise ValueError("give at least one of openid, unionid, phone")
        return self


class EventIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=128)
    type: EventType
    occurred_at: AwareDatetime
    customer: CustomerRef
    data: dict[str, Any] = {}

    @field_validator("occurred_at")
    @classmethod
    def _plausible(cls, when: datetime) -> datetime:
        if not EARLIEST <= when < LATEST:
            raise ValueError(f"must be between {EARLIEST.year} and {LATEST.year - 1}")
        return when


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow")  # the brand's extra fields travel to the flow engine


class Item(_Data):
    sku: str = Field(min_length=1, max_length=64)
    qty: int = Field(1, ge=1, le=1_000_000)


Money = Field(ge=0, max_digits=12, decimal_places=2)


class OrderPaid(_Data):
    order_id: str = Field(min_length=1, max_length=64)
    amount: Decimal = Money
    items: list[Item] = []


class OrderDelivered(_Data):
    order_id: str = Field(min_length=1, max_length=64)


class OrderRefunded(_Data):
    order_id: str = Field(min_length=1, max_length=64)
    amount: Decimal | None = Field(None, ge=0, max_digits=12, decimal_places=2)  # partial refund


class CartAbandoned(_Data):
    items: list[Item] = []
    amount: Decimal | None = Field(None, ge=0, max_digits=12, decimal_places=2)


class PointsChanged(_Data):
    delta: int = Field(ge=-MAX_POINTS_DELTA, le=MAX_POINTS_DELTA)
    reason: str = Field("积分变动", max_length=255)

    @field_validator("delta")
    @classmethod
    def _non_zero(cls, delta: int) -> int:
        if delta == 0:
            raise ValueError("must not be 0")
        return delta


Tag = Annotated[str, Field(min_length=1, max_length=64)]
MAX_TAGS = 100
_PHONE = re.compile(r"^\+?[0-9][0-9 -]{4,30}$")


class ProfileUpdated(_Data):
    nickname: str | None = Field(None, max_length=128)
    phone: str | None = Field(None, max_length=32)
    tags: list[Tag] | None = Field(None, max_length=MAX_TAGS)  # replaces the customer's tags
    add_tags: list[Tag] = Field([], max_length=MAX_TAGS)
    remove_tags: list[Tag] = Field([], max_length=MAX_TAGS)
    attributes: dict[str, Any] | None = None  # merged; a null value removes the attribute
    timezone: ZoneName | None = None

    @field_validator("phone")
    @classmethod
    def _phone(cls, phone: str | None) -> str | None:
        if phone is not None and not _PHONE.match(phone):
            raise ValueError("not a phone number")
        return phone

class StoreVisit(_Data):
    store_id: str | None = Field(None, max_length=64)


DATA_MODELS: dict[str, type[_Data]] = {
    "order_paid": OrderPaid, "order_delivered": OrderDelivered, "order_refunded": OrderRefunded,
    "cart_abandoned": CartAbandoned, "points_changed": PointsChanged,
    "profile_updated": ProfileUpdated, "store_visit": StoreVisit,
}


@dataclass(frozen=True)
class ParsedEvent:
    event: EventIn
    data: Any  # the type's data model


def parse_event(raw: Any) -> ParsedEvent:
    """Validate one event; EventError names the first bad field."""
    if not isinstance(raw, dict):
        raise EventError("event", "expected a JSON object")
    try:
        check_json(raw)  # text every database stores, 64-bit numbers, bounded nesting
    except BadInput as error:
        raise EventError(error.where or "event", error.message) from None
    try:
        event = EventIn.model_validate(raw)
    except ValidationError as error:
        raise _first_error(error, "") from None
    try:
        data = DATA_MODELS[event.type].model_validate(event.data)
    except ValidationError as error:
        raise _first_error(error, "data.") from None
    return ParsedEvent(event, data)


def _first_error(error: ValidationError, prefix: str) -> EventError:
    item = error.errors()[0]
    where = prefix + ".".join(str(part) for part in item["loc"]) if item["loc"] else prefix.rstrip(".") or "event"
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] == "missing":
        message = "missing"
    elif item["type"] == "literal_error" and where == "type":
        message = f"unknown event type {item.get('input')!r}; expected one of {', '.join(EVENT_TYPES)}"
    return EventError(where, message)


# ---- applying ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventContext:
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    points: PointsSettings = field(default_factory=PointsSettings)
    reactions: Reactions = field(default_factory=NoReactions)


@dataclass(frozen=True)
class RowResult:
    row: int  # index in the request, or line number in a file
    id: str | None
    status: str  # applied, duplicate, error
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.row, "id": self.id, "status": self.status}
        if self.error is not None:
            out["error"] = self.error
        return out


async def ingest(sessions: async_sessionmaker[AsyncSession],
                 rows: Iterable[tuple[int, Any]] | AsyncIterable[tuple[int, Any]],
                 now: datetime, context: EventContext, *, row_label: str = "item") -> list[RowResult]:
    """Apply (row number, raw event) pairs, each in its own transaction; one result per row."""
    results = []
    if isinstance(rows, AsyncIterable):
        async for row, raw in rows:
            results.append(await ingest_one(sessions, row, raw, now, context, row_label=row_label))
    else:
        for row, raw in rows:
            results.append(await ingest_one(sessions, row, raw, now, context, row_label=row_label))
    return results


async def ingest_one(sessions: async_sessionmaker[AsyncSession], row: int, raw: Any, now: datetime,
                     context: EventContext, *, row_label: str = "item") -> RowResult:
    event_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
    try:
        parsed = parse_event(raw)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with sessions() as session, session.begin():
                    status = await apply_event(session, parsed, now, context)
                return RowResult(row, event_id, status)
            except IntegrityError:
                # The same event (or the same new customer) arrived through another process:
                # the next attempt sees it.
                if attempt == _ATTEMPTS:
                    raise EventError("id", "conflicts with an event or order stored meanwhile") from None
            except DBAPIError as error:
                if not is_retryable(error) or attempt == _ATTEMPTS:
                    raise
        raise AssertionError("unreachable")
    except EventError as error:
        return RowResult(row, event_id, "error", f"{row_label} {row}: {error}")
    except Exception as error:
        # Its transaction is rolled back and the others go on; only storage being unavailable
        # (every event would fail the same way) ends the whole request.
        if storage_unavailable(error):
            raise
        log.exception("business event %s (%s %d) could not be applied", mask(event_id or "?"), row_label, row)
        return RowResult(row, event_id, "error",
                         f"{row_label} {row}: could not be stored ({type(error).__name__}); nothing of it was applied")


async def apply_event(session: AsyncSession, parsed: ParsedEvent, now: datetime,
                      context: EventContext) -> str:
    """Apply one validated event inside the caller's transaction: "applied" or "duplicate"."""
    event, data = parsed.event, parsed.data
    seen = (await session.execute(select(BusinessEvent.id).where(BusinessEvent.event_id == event.id))).first()
    if seen is not None:
        return "duplicate"
    customer = await match_customer(session, event.customer, now, context)
    stored = data.model_dump(mode="json", exclude_none=True)
    session.add(BusinessEvent(event_id=event.id, type=event.type, customer_id=customer.id, data=stored,
                              occurred_at=event.occurred_at, received_at=now))
    await session.flush()  # a concurrent copy of this event fails here, before any effect
    await _EFFECTS[event.type](session, customer, event, data, now, context)
    await context.reactions.on_event(session, customer, event.type, stored, now)
    log.debug("applied %s %s for customer %s", event.type, event.id, customer.id)
    return "applied"


async def match_customer(session: AsyncSession, ref: CustomerRef, now: datetime,
                         context: EventContext) -> Customer:
    """openid (an Official Account customer first), then unionid, then phone; locked for update."""
    prefer_mp = case((Customer.channel == NEW_CUSTOMER_CHANNEL, 0), else_=1)
    for column, value in ((Customer.external_id, ref.openid), (Customer.unionid, ref.unionid),
                          (Customer.phone, ref.phone)):
        if not value:
            continue
        customer = (await session.execute(
            select(Customer).where(column == value).order_by(prefer_mp, Customer.id).limit(1)
            .with_for_update()
        )).scalar_one_or_none()
        if customer is not None:
            customer.unionid = customer.unionid or ref.unionid
            customer.phone = customer.phone or ref.phone
            return customer
    if not ref.openid:
        which = "unionid" if ref.unionid else "phone"
        raise EventError(f"customer.{which}", f"no customer has this {which}; give an openid to create one")
    customer = new_customer(NEW_CUSTOMER_CHANNEL, ref.openid, now, unionid=ref.unionid, phone=ref.phone,
                            source="business_event")
    session.add(customer)
    await session.flush()
    log_event(session, customer.id, "first_contact", now, {"channel": NEW_CUSTOMER_CHANNEL,
                                                            "source": "business_event"})
    await lifecycle.record_first_contact(session, customer, "first contact (business event)", now,
                                         context.reactions)
    log.info("created customer %s from a business event", mask(ref.openid))
    return customer


def _later(current: datetime | None, when: datetime) -> datetime:
    return when if current is None or when > current else current


async def _order(session: AsyncSession, customer: Customer, order_id: str) -> Order:
    order = (await session.execute(select(Order).where(Order.order_id == order_id).with_for_update())
             ).scalar_one_or_none()
    if order is None:
        raise EventError("data.order_id", f"no order {order_id} (send its order_paid first)")
    if order.customer_id != customer.id:
        raise EventError("data.order_id", f"order {order_id} belongs to another customer")
    return order


async def _order_paid(session: AsyncSession, customer: Customer, event: EventIn, data: OrderPaid,
                      now: datetime, context: EventContext) -> None:
    if (await session.execute(select(Order.id).where(Order.order_id == data.order_id))).first():
        raise EventError("data.order_id", f"order {data.order_id} was already paid by another event")
    paid_at = event.occurred_at
    if (customer.lifetime_spend or Decimal(0)) + data.amount > MAX_LIFETIME_SPEND:
        raise EventError("data.amount", f"the customer's lifetime spend would exceed {MAX_LIFETIME_SPEND}")
    session.add(Order(order_id=data.order_id, customer_id=customer.id, status="paid", amount=data.amount,
                      items=[item.model_dump(mode="json") for item in data.items], paid_at=paid_at))
    customer.orders_count = (customer.orders_count or 0) + 1
    customer.lifetime_spend = (customer.lifetime_spend or Decimal(0)) + data.amount
    customer.last_order_at = _later(customer.last_order_at, paid_at)
    if customer.first_order_at is None or paid_at < customer.first_order_at:
        customer.first_order_at = paid_at
    customer.last_active_at = _later(customer.last_active_at, paid_at)
    customer.purchase_overdue_at = lifecycle.purchase_overdue_at(customer, context.lifecycle)
    earned = points.points_for_amount(data.amount, context.points)
    if earned:
        try:
            points.earn(session, customer, earned, f"订单 {data.order_id} 消费积分", paid_at, context.points,
                        source_event_id=event.id)
        except points.BalanceLimit as error:
            raise EventError("data.amount", str(error)) from None
    await lifecycle.evaluate_after_order(session, customer, f"order_paid {data.order_id}", now,
                                         context.lifecycle, context.reactions)


async def _order_delivered(session: AsyncSession, customer: Customer, event: EventIn,
                           data: OrderDelivered, now: datetime, context: EventContext) -> None:
    order = await _order(session, customer, data.order_id)
    if order.status == "refunded":
        raise EventError("data.order_id", f"order {data.order_id} was refunded")
    order.status = "delivered"
    order.delivered_at = event.occurred_at
    await lifecycle.evaluate_after_delivery(session, customer, f"order_delivered {data.order_id}", now,
                                            context.reactions)


async def _order_refunded(session: AsyncSession, customer: Customer, event: EventIn,
                          data: OrderRefunded, now: datetime, context: EventContext) -> None:
    order = await _order(session, customer, data.order_id)
    if order.status == "refunded":
        raise EventError("data.order_id", f"order {data.order_id} was already refunded")
    amount = order.amount if data.amount is None else data.amount
    if amount > order.amount:
        raise EventError("data.amount", f"refund {amount} is more than the order's {order.amount}")
    if amount == order.amount:
        order.status = "refunded"
        customer.orders_count = max(0, (customer.orders_count or 0) - 1)
    order.refunded_at = event.occurred_at
    customer.lifetime_spend = max(Decimal(0), (customer.lifetime_spend or Decimal(0)) - amount)
    # Points earned on the refunded amount go back, as far as the customer still has them.
    owed = min(points.points_for_amount(amount, context.points), customer.points_balance or 0)
    if owed > 0:
        try:
            await points.spend(session, customer, owed, f"订单 {data.order_id} 退款", now,
                               source_event_id=event.id, kind="adjust")
        except points.InsufficientPoints as short:
            if short.available:
                await points.spend(session, customer, short.available, f"订单 {data.order_id} 退款",
                                   now, source_event_id=event.id, kind="adjust")


async def _cart_abandoned(session: AsyncSession, customer: Customer, event: EventIn,
                          data: CartAbandoned, now: datetime, context: EventContext) -> None:
    customer.last_active_at = _later(customer.last_active_at, event.occurred_at)


async def _points_changed(session: AsyncSession, customer: Customer, event: EventIn,
                          data: PointsChanged, now: datetime, context: EventContext) -> None:
    if data.delta > 0:
        try:
            points.earn(session, customer, data.delta, data.reason, event.occurred_at, context.points,
                        source_event_id=event.id)
        except points.BalanceLimit as error:
            raise EventError("data.delta", str(error)) from None
        return
    try:
        await points.spend(session, customer, -data.delta, data.reason, now, source_event_id=event.id)
    except points.InsufficientPoints as short:
        raise EventError("data.delta", f"the customer has only {short.available} points") from None


async def _profile_updated(session: AsyncSession, customer: Customer, event: EventIn,
                           data: ProfileUpdated, now: datetime, context: EventContext) -> None:
    if data.nickname is not None:
        customer.nickname = data.nickname
    if data.phone is not None:
        customer.phone = data.phone
    if data.timezone is not None:
        customer.timezone = data.timezone
    if data.tags is not None or data.add_tags or data.remove_tags:
        tags = list(data.tags if data.tags is not None else customer.tags or [])
        tags += [tag for tag in data.add_tags if tag not in tags]
        customer.tags = [tag for tag in dict.fromkeys(tags) if tag not in data.remove_tags]
    if data.attributes:
        merged = {**(customer.attributes or {}), **data.attributes}
        customer.attributes = {key: value for key, value in merged.items() if value is not None}


async def _store_visit(session: AsyncSession, customer: Customer, event: EventIn, data: StoreVisit,
                       now: datetime, context: EventContext) -> None:
    customer.last_active_at = _later(customer.last_active_at, event.occurred_at)
    await lifecycle.evaluate_after_message(session, customer, "store_visit", now, context.lifecycle,
                                           context.reactions)


_EFFECTS: dict[str, Any] = {
    "order_paid": _order_paid, "order_delivered": _order_delivered, "order_refunded": _order_refunded,
    "cart_abandoned": _cart_abandoned, "points_changed": _points_changed,
    "profile_updated": _profile_updated, "store_visit": _store_visit,
}
