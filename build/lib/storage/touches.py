"""The outbox's front door: proactive messages become `touches` rows with a due time.

Flows, lifecycle rules and staff call `enqueue_touch`; `bot/touch_dispatch.py` sends due rows
after `bot/touch_policy.py` has re-checked them at the moment of sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, Table, select, text, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.models import Touch
from storage.upsert import insert_ignore


class TouchKind(StrEnum):
    SERVICE = "service"
    MARKETING = "marketing"


class TouchStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # checked and committed; the platform call is under way (see touch_dispatch)
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"


class TouchError(ValueError):
    """A touch that can never be delivered as given (bad body, template or kind)."""


# Since 2023-05-04 template messages have no first/remark fields and keyword values are at most
# 20 characters without line breaks (WECHAT.md, Sending).
TEMPLATE_VALUE_MAX = 20
_FORBIDDEN_TEMPLATE_KEYS = {"first", "remark"}
_ARTICLE_FIELDS = {"title", "description", "url", "picurl"}


def validate_body(body: dict[str, Any]) -> None:
    kind = body.get("type")
    if kind == "text":
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise TouchError("a text touch needs a non-empty 'text'")
    elif kind == "news":
        articles = body.get("articles")
        # message/custom/send accepts one article per news message (more is error 45008).
        if not isinstance(articles, list) or len(articles) != 1:
            raise TouchError("a news touch needs exactly one article in 'articles'")
        for article in articles:
            if not isinstance(article, dict) or not article.get("title") or not article.get("url"):
                raise TouchError("a news article needs at least 'title' and 'url'")
            unknown = set(article) - _ARTICLE_FIELDS
            if unknown:
                raise TouchError(f"unknown news article fields: {', '.join(sorted(unknown))}")
            if not all(isinstance(value, str) for value in article.values()):
                raise TouchError("news article fields must be strings")
    elif kind == "image":
        if not isinstance(body.get("media_id"), str) or not body["media_id"]:
            raise TouchError("an image touch needs a 'media_id'")
    else:
        raise TouchError(f"unknown touch body type {kind!r}; use text, news or image")


def validate_template(template: dict[str, Any]) -> None:
    template_id = template.get("template_id")
    if not isinstance(template_id, str) or not template_id:
        raise TouchError("a template needs a 'template_id'")
    unknown = set(template) - {"template_id", "data", "url"}
    if unknown:
        raise TouchError(f"unknown template fields: {', '.join(sorted(unknown))}")
    data = template.get("data")
    if not isinstance(data, dict) or not data:
        raise TouchError("a template needs 'data' with at least one keyword")
    for key, value in data.items():
        if key in _FORBIDDEN_TEMPLATE_KEYS:
            raise TouchError(f"template keyword {key!r} no longer exists on WeChat")
        if not isinstance(value, str):
            raise TouchError(f"template keyword {key!r} must be a string")
        if len(value) > TEMPLATE_VALUE_MAX:
            raise TouchError(f"template keyword {key!r} is longer than {TEMPLATE_VALUE_MAX} characters")
        if "\n" in value or "\r" in value:
            raise TouchError(f"template keyword {key!r} contains a line break")
    url = template.get("url")
    if url is not None and not isinstance(url, str):
        raise TouchError("template 'url' must be a string")


def validate_touch(kind: str, body: dict[str, Any], template: dict[str, Any] | None, due_at: datetime) -> None:
    """What every touch must be before it is stored; TouchError says what is wrong."""
    if kind not in (TouchKind.SERVICE, TouchKind.MARKETING):
        raise TouchError(f"unknown touch kind {kind!r}; use service or marketing")
    validate_body(body)
    if template is not None:
        if kind == TouchKind.MARKETING:
            raise TouchError("WeChat forbids marketing in template messages")
        validate_template(template)
    if due_at.tzinfo is None:
        raise TouchError("due_at must be timezone-aware")


async def enqueue_touch(
    session: AsyncSession,
    *,
    customer_id: int,
    kind: str,
    body: dict[str, Any],
    due_at: datetime,
    idempotency_key: str,
    template: dict[str, Any] | None = None,
    priority: int = 0,
    defer_when_capped: bool = False,
    flow_run_id: int | None = None,
    now: datetime | None = None,
) -> Touch | None:
    """Schedule one proactive message; None when a touch with this key already exists.

    Runs in the caller's transaction, so a touch exists exactly when the flow step that wanted
    it was committed. The key makes enqueueing idempotent (insert-ignore, never an error).
    """
    values = _touch_row({"customer_id": customer_id, "flow_run_id": flow_run_id, "kind": kind, "body": body,
                         "template": template, "priority": priority, "defer_when_capped": defer_when_capped,
                         "idempotency_key": idempotency_key, "due_at": due_at}, now or datetime.now(UTC))
    result = cast(CursorResult[Any], await session.execute(
        insert_ignore(session.get_bind().dialect.name, Touch, values)))
    if not result.rowcount:
        return None
    return (
        await session.execute(select(Touch).where(Touch.idempotency_key == idempotency_key))
    ).scalar_one()


def _validate(kind: str, body: dict[str, Any], template: dict[str, Any] | None, due_at: datetime,
              idempotency_key: str) -> None:
    validate_touch(kind, body, template, due_at)
    if not idempotency_key or len(idempotency_key) > 191:
        raise TouchError("idempotency_key must be 1-191 characters")


def _touch_row(item: dict[str, Any], created: datetime) -> dict[str, Any]:
    """A new touches row from enqueue_touch's keyword arguments, validated."""
    kind, body, template = item["kind"], item["body"], item.get("template")
    _validate(kind, body, template, item["due_at"], item["idempotency_key"])
    return {"customer_id": item["customer_id"], "flow_run_id": item.get("flow_run_id"), "kind": str(kind),
            "body": body, "template": template, "priority": item.get("priority", 0),
            "defer_when_capped": item.get("defer_when_capped", False),
            "idempotency_key": item["idempotency_key"], "status": TouchStatus.PENDING.value,
            "attempts": 0, "due_at": item["due_at"], "created_at": created}


async def enqueue_touches(session: AsyncSession, touches: list[dict[str, Any]],
                          now: datetime | None = None) -> int:
    """Bulk `enqueue_touch` (broadcasts, imports): same validation, insert-ignore by key.

    Each item holds enqueue_touch's keyword arguments. Returns how many rows were new. Runs in the
    caller's transaction, like `enqueue_touch`; a TouchError leaves nothing of the call behind
    only if the caller rolls back (validation runs chunk by chunk on PostgreSQL).
    """
    created = now or datetime.now(UTC)
    if not touches:
        return 0
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        return await _enqueue_postgresql(connection, touches, created)
    rows = [_touch_row(item, created) for item in touches]
    if connection.dialect.name == "sqlite":
        # One statement, compiled once; SQLAlchemy sends the rows as multi-row VALUES batches
        # ("insertmanyvalues") and RETURNING tells which keys were new.
        return len((await connection.execute(_SQLITE_INSERT, rows)).all())
    # MySQL/MariaDB: the driver folds the executemany into multi-row INSERT IGNORE statements.
    return int((await connection.execute(_MYSQL_INSERT, rows)).rowcount or 0)


# Rows per PostgreSQL statement: while the server inserts one chunk, the next is validated and
# encoded, so the two costs overlap instead of adding up.
PG_CHUNK = 500


async def _enqueue_postgresql(connection: AsyncConnection, touches: list[dict[str, Any]],
                              created: datetime) -> int:
    """`INSERT … SELECT FROM unnest(…)` per chunk: the columns travel as typed arrays in asyncpg's
    binary format, and the statement text never changes (one prepared statement).

    New keys, the common case, go in with a plain INSERT: ON CONFLICT's speculative insertion
    costs PostgreSQL half as much again per row. A key already stored (a re-run import), repeated
    within the call or stored meanwhile by another transaction is a unique violation; then the
    call goes back to its savepoint and is done again with ON CONFLICT DO NOTHING.
    """
    created_at = created.astimezone(UTC).replace(tzinfo=None)
    chunks: list[dict[str, Any]] = []
    try:
        async with connection.begin_nested():
            return await _insert_chunks(connection, _PG_INSERT_NEW, touches, created_at, chunks)
    except IntegrityError as error:
        if getattr(error.orig, "sqlstate", None) != _UNIQUE_VIOLATION:
            raise
    return await _insert_chunks(connection, _PG_INSERT_IGNORE, touches, created_at, chunks)


async def _insert_chunks(connection: AsyncConnection, statement: Any, touches: list[dict[str, Any]],
                         created_at: datetime, chunks: list[dict[str, Any]]) -> int:
    """Run `statement` once per chunk, encoding the next chunk while the server inserts this one;
    `chunks` keeps the encoded columns for a second pass."""
    pending: asyncio.Future[Any] | None = None
    new = 0
    try:
        for number, first in enumerate(range(0, len(touches), PG_CHUNK)):
            if number == len(chunks):
                chunks.append(_pg_columns(touches[first:first + PG_CHUNK], created_at))
            if pending is not None:
                new += len((await pending).all())
            pending = asyncio.ensure_future(connection.execute(statement, chunks[number]))
            await asyncio.sleep(0)  # the statement leaves before this task turns back to encoding
        assert pending is not None
        return new + len((await pending).all())
    finally:
        # A bad touch in a later chunk: never leave a statement running on the caller's connection.
        if pending is not None and not pending.done():
            with contextlib.suppress(Exception):
                await pending


def _pg_columns(touches: list[dict[str, Any]], created_at: datetime) -> dict[str, Any]:
    """Validated touches as the column arrays `_PG_INSERT` takes; times as naive UTC (UTCDateTime)."""
    customer_ids, flow_run_ids, kinds, bodies, templates = [], [], [], [], []
    priorities, defers, keys, dues = [], [], [], []
    utc: dict[datetime, datetime] = {}
    dumps = _JSON.encode
    for item in touches:
        kind, body, template, due = item["kind"], item["body"], item.get("template"), item["due_at"]
        key = item["idempotency_key"]
        _validate(kind, body, template, due, key)
        if due not in utc:
            utc[due] = due.astimezone(UTC).replace(tzinfo=None)
        customer_ids.append(item["customer_id"])
        flow_run_ids.append(item.get("flow_run_id"))
        kinds.append(str(kind))
        bodies.append(body)
        templates.append(None if template is None else dumps(template))
        priorities.append(item.get("priority", 0))
        defers.append(item.get("defer_when_capped", False))
        keys.append(key)
        dues.append(utc[due])
    # The bodies as one JSON document: one encoder call per chunk instead of one per row.
    return {"customer_id": customer_ids, "flow_run_id": flow_run_ids, "kind": kinds, "body": dumps(bodies),
            "template": templates, "priority": priorities, "defer_when_capped": defers, "idempotency_key": keys,
            "due_at": dues, "created_at": created_at}


# Raw UTF-8, as SQLAlchemy's JSON type would store it.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_UNIQUE_VIOLATION = "23505"
_PG_INSERT = """
INSERT INTO touches (customer_id, flow_run_id, kind, body, template, priority, defer_when_capped,
                     idempotency_key, status, attempts, due_at, created_at)
SELECT customer_id, flow_run_id, kind, body, template, priority, defer_when_capped,
       idempotency_key, 'pending', 0, due_at, CAST(:created_at AS TIMESTAMP)
FROM unnest(CAST(:customer_id AS BIGINT[]), CAST(:flow_run_id AS BIGINT[]), CAST(:kind AS VARCHAR[]),
            CAST(:template AS JSON[]), CAST(:priority AS INTEGER[]), CAST(:defer_when_capped AS BOOLEAN[]),
            CAST(:idempotency_key AS VARCHAR[]), CAST(:due_at AS TIMESTAMP[])) WITH ORDINALITY
     AS new (customer_id, flow_run_id, kind, template, priority, defer_when_capped, idempotency_key, due_at, n)
JOIN json_array_elements(CAST(:body AS JSON)) WITH ORDINALITY AS bodies (body, n) USING (n)
{tail}
RETURNING id
"""
_PG_INSERT_NEW = text(_PG_INSERT.format(tail=""))
_PG_INSERT_IGNORE = text(_PG_INSERT.format(tail="ON CONFLICT DO NOTHING"))
_touches = cast(Table, Touch.__table__)
_SQLITE_INSERT = sqlite.insert(_touches).on_conflict_do_nothing().returning(_touches.c.id)
_MYSQL_INSERT = mysql.insert(_touches).prefix_with("IGNORE")


async def cancel_touches(
    session: AsyncSession,
    *,
    customer_id: int,
    flow_run_id: int | None = None,
    kinds: Iterable[str] | None = None,
    reason: str,
) -> int:
    """Mark a customer's pending touches skipped with `reason`; returns how many.

    A dispatcher that already claimed one of them re-reads its status under the customer's row
    lock before sending, so a cancel committed first always wins.
    """
    statement = update(Touch).where(Touch.customer_id == customer_id,
                                    Touch.status == TouchStatus.PENDING.value)
    if flow_run_id is not None:
        statement = statement.where(Touch.flow_run_id == flow_run_id)
    if kinds is not None:
        statement = statement.where(Touch.kind.in_([str(kind) for kind in kinds]))
    result = cast(CursorResult[Any], await session.execute(
        statement.values(status=TouchStatus.SKIPPED.value, reason=reason, lease_until=None)
        .execution_options(synchronize_session=False)
    ))
    return int(result.rowcount or 0)
