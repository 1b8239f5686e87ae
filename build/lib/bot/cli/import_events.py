"""`siyu import FILE`: business events from a CSV or JSONL file, each row applied on its own.

Errors name the file, the line and the field; good rows are kept. Importing the same file
again applies nothing twice (events are idempotent by id).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bot.config.settings import Settings, load_settings, resolve_config_path
from flows.business_events import EventContext, ingest_one

BASE_COLUMNS = ("id", "type", "occurred_at", "openid", "unionid", "phone", "data")
PROGRESS_EVERY = 1000

DESCRIPTION = """\
Import business events (order_paid, order_delivered, order_refunded, cart_abandoned,
points_changed, profile_updated, store_visit) from a file. Each row is applied in its own
transaction; a bad row is reported as FILE:LINE: ID: FIELD: problem and the others are kept.
Rows already imported (same id) count as duplicates.

JSONL (.jsonl, .ndjson): one event per line, as for POST /api/v1/events:
  {"id": "evt-1001", "type": "order_paid", "occurred_at": "2026-11-23T10:00:00+08:00",
   "customer": {"openid": "o123"}, "data": {"order_id": "A1001", "amount": "199.00"}}

CSV (.csv, UTF-8, header row): columns id, type, occurred_at (ISO 8601 with a zone), openid,
unionid, phone (at least one of the three), data (a JSON object, optional). Any other column
is a field of data, e.g. order_id, amount, delta, reason, store_id; a cell holding a JSON array
or object (items, tags) is decoded; empty cells are left out:
  id,type,occurred_at,openid,phone,order_id,amount
  evt-1001,order_paid,2026-11-23T10:00:00+08:00,o123,,A1001,199.00

Exit status: 0 when every row was applied or a duplicate, 1 when some rows failed, 2 when the
file cannot be read."""


def add_import_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("import", help="import business events from a CSV or JSONL file",
                                 description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="the CSV or JSONL file")
    parser.add_argument("--format", choices=["csv", "jsonl"],
                        help="file format (default: from the extension; .csv is CSV, else JSONL)")
    parser.add_argument("--config", help="config file (default: $SIYU_CONFIG or ./config.toml)")
    parser.add_argument("--url", help="database URL (overrides the config and $SIYU_DATABASE_URL)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--progress-every", type=int, default=PROGRESS_EVERY, metavar="N",
                        help=f"a progress line on stderr every N rows (default {PROGRESS_EVERY})")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(func=run_import)


class RowsError(Exception):
    """The file as a whole cannot be read."""


@dataclass
class ImportTally:
    rows: int = 0
    applied: int = 0
    duplicate: int = 0
    error: int = 0


def read_rows(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """(line number, raw event) pairs; a line that is not an event at all yields an error string."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as error:
        raise RowsError(f"{path}: cannot open: {error.strerror or error}") from None
    with handle:
        yield from (_csv_rows(handle) if fmt == "csv" else _jsonl_rows(handle))


def _jsonl_rows(handle: TextIO) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply
            yield number, f"not JSON: {error}"


def _csv_rows(handle: TextIO) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(handle)
    header = reader.fieldnames or []
    missing = [name for name in ("id", "type", "occurred_at") if name not in header]
    if missing:
        raise RowsError(f"line 1: the header lacks {', '.join(missing)} (columns: {', '.join(BASE_COLUMNS)}, "
                        "or data fields such as order_id, amount)")
    line = 1
    for record in reader:
        start, line = line + 1, reader.line_num
        yield start, _csv_event(record)


def _csv_event(record: dict[str, Any]) -> Any:
    data: dict[str, Any] = {}
    if record.get("data"):
        try:
            data = json.loads(record["data"])
        except (ValueError, RecursionError) as error:
            return f"data: not a JSON object: {error}"
        if not isinstance(data, dict):
            return "data: not a JSON object"
    for name, value in record.items():
        if name in BASE_COLUMNS or name is None or value in (None, ""):
            continue
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                pass
        data[name] = value
    customer = {key: record.get(key) or None for key in ("openid", "unionid", "phone")}
    return {"id": record.get("id") or None, "type": record.get("type") or None,
            "occurred_at": record.get("occurred_at") or None, "customer": customer, "data": data}


def _settings(args: argparse.Namespace) -> Settings:
    path = resolve_config_path(args.config)
    if path.exists() or args.config:
        settings = load_settings(path)
    else:
        settings = Settings()
        if os.environ.get("SIYU_DATABASE_URL"):
            settings = settings.model_copy(update={"storage": settings.storage.model_copy(
                update={"url": os.environ["SIYU_DATABASE_URL"]})})
    if args.url:
        settings = settings.model_copy(update={"storage": settings.storage.model_copy(update={"url": args.url})})
    return settings


def run_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    fmt = args.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    if not path.is_file():
        print(f"siyu import: {path}: no such file", file=sys.stderr)
        return 2
    settings = _settings(args)
    try:
        tally = asyncio.run(import_file(path, fmt, settings,
                                        progress=0 if args.quiet else max(1, args.progress_every)))
    except RowsError as error:
        print(f"siyu import: {error}", file=sys.stderr)
        return 2
    print(f"{path}: {tally.rows} rows: {tally.applied} applied, {tally.duplicate} duplicate, "
          f"{tally.error} failed")
    return 1 if tally.error else 0


async def import_file(path: Path, fmt: str, settings: Settings, *, progress: int = PROGRESS_EVERY,
                      context: EventContext | None = None) -> ImportTally:
    from bot.clock import SystemClock
    from storage.db import make_engine, make_sessionmaker
    from storage.migrate import current_revision, head_revision

    engine = make_engine(settings.storage.url, pool_size=2)
    try:
        current = await current_revision(engine)
        if current != head_revision():
            raise RowsError(f"the database schema is at {current or 'nothing'}, this release needs "
                            f"{head_revision()}: run `siyu db upgrade`")
        sessions = make_sessionmaker(engine)
        if context is None:
            # Imported orders and carts start and end flows exactly as the API's do.
            from bot.app.services import start_flow_engine

            flows = await start_flow_engine(settings, sessions, SystemClock())
            context = EventContext(lifecycle=settings.lifecycle, points=settings.points, reactions=flows)
        clock = SystemClock()
        tally = ImportTally()
        started = time.monotonic()
        error: str | None
        for line, raw in read_rows(path, fmt):
            tally.rows += 1
            if isinstance(raw, str):  # unreadable line
                result_status, error = "error", f"line {line}: {raw}"
            else:
                result = await ingest_one(sessions, line, raw, clock.now(), context, row_label="line")
                result_status, error = result.status, result.error
                if error and result.id:
                    error = error.replace(f"line {line}: ", f"line {line}: {result.id}: ", 1)
            setattr(tally, result_status, getattr(tally, result_status) + 1)
            if error:
                print(f"{path}:{error.removeprefix('line ')}", file=sys.stderr)
            if progress and tally.rows % progress == 0:
                rate = tally.rows / max(time.monotonic() - started, 1e-9)
                print(f"… {tally.rows} rows ({tally.applied} applied, {tally.duplicate} duplicate, "
                      f"{tally.error} failed; {rate:.0f} rows/s)", file=sys.stderr, flush=True)
        return tally
    finally:
        await engine.dispose()
