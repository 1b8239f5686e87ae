"""Time the lifecycle sweep over many customers on PostgreSQL (target: 1,000,000 within 30 s).

Seeds N customers in a separate schema with INSERT … SELECT generate_series: 20% past their
usual purchase interval (→ at_risk), 10% inactive for 200 days and 10% unsubscribed
(→ churned), 1% with three unanswered touches (→ at_risk), the rest active. Then runs
`lifecycle_sweep` once, checks the counts and prints customers/s. The schema is dropped after.

    .venv/bin/python bench/lifecycle_sweep.py --url postgresql+asyncpg://root@127.0.0.1:5432/test
    .venv/bin/python bench/lifecycle_sweep.py --customers 100000 --with-reactions
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from flows.lifecycle import lifecycle_sweep
from flows.lifecycle_settings import LifecycleSettings
from storage.db import make_sessionmaker
from storage.schema import metadata

TARGET_SECONDS = 30.0
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

SEED_CUSTOMERS = """
INSERT INTO customers (channel, external_id, stage, subscribed, created_at, last_inbound_at,
    last_order_at, first_order_at, purchase_overdue_at, last_active_at, tags, attributes, timezone,
    points_balance, orders_count, lifetime_spend, marketing_opt_out, window_quota, window_used)
SELECT 'wechat_mp', 'bench-' || g,
    CASE WHEN g % 10 IN (0, 1) THEN 'purchase' WHEN g % 10 = 2 THEN 'interest'
         WHEN g % 10 = 3 THEN 'loyalty' WHEN g % 10 IN (4, 5, 6) THEN 'use' ELSE 'contact' END,
    g % 10 <> 3,
    CAST(:now AS timestamp) - interval '400 days',
    CASE WHEN g % 10 = 2 THEN CAST(:now AS timestamp) - interval '200 days'
         ELSE CAST(:now AS timestamp) - (g % 30) * interval '1 day' END,
    CASE WHEN g % 10 IN (0, 1, 3, 4, 5, 6) THEN CAST(:now AS timestamp) - (g % 90 + 30) * interval '1 day' END,
    CASE WHEN g % 10 IN (0, 1, 3, 4, 5, 6) THEN CAST(:now AS timestamp) - interval '300 days' END,
    CASE WHEN g % 10 IN (0, 1) THEN CAST(:now AS timestamp) - interval '1 day'
         WHEN g % 10 IN (3, 4, 5, 6) THEN CAST(:now AS timestamp) + interval '20 days' END,
    NULL, '[]', '{}', 'Asia/Shanghai', 0, CASE WHEN g % 10 IN (0, 1, 3, 4, 5, 6) THEN 3 ELSE 0 END,
    0, false, 0, 0
FROM generate_series(1, :n) AS g
"""

# Three touches sent since their last message to 1% of the customers in `use` (g % 100 = 4).
SEED_TOUCHES = """
INSERT INTO touches (customer_id, kind, body, priority, defer_when_capped, idempotency_key, status,
    attempts, due_at, created_at, sent_at)
SELECT c.id, 'marketing', '{"text": "新品上市"}', 0, false, 'bench-' || c.id || '-' || t, 'sent', 1,
    CAST(:now AS timestamp) - interval '1 hour', CAST(:now AS timestamp) - interval '2 days',
    CAST(:now AS timestamp) - interval '1 hour'
FROM customers c CROSS JOIN generate_series(1, 3) AS t
WHERE c.external_id LIKE 'bench-%' AND CAST(substr(c.external_id, 7) AS bigint) % 100 = 4
"""


class CountingReactions:
    """Stands for the flow engine: customers are loaded and handed over, nothing else."""

    def __init__(self) -> None:
        self.stage_changes = 0

    async def on_event(self, *args: Any) -> None:
        return None

    async def on_stage_change(self, *args: Any) -> None:
        self.stage_changes += 1


async def run(url: str, customers: int, schema: str, keep: bool, with_reactions: bool,
              fillfactor: int = 0, batch_size: int = 2000) -> int:
    admin = create_async_engine(url)
    async with admin.begin() as connection:
        await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    await admin.dispose()
    engine = create_async_engine(url, pool_size=4, connect_args={"server_settings": {"search_path": schema}})
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            if fillfactor:
                await connection.execute(text(f"ALTER TABLE customers SET (fillfactor = {int(fillfactor)})"))
        started = time.perf_counter()
        naive_now = NOW.replace(tzinfo=None)
        async with engine.begin() as connection:
            await connection.execute(text(SEED_CUSTOMERS), {"n": customers, "now": naive_now})
            await connection.execute(text(SEED_TOUCHES), {"now": naive_now})
        async with engine.connect() as connection:
            await connection.execute(text("COMMIT"))
            await connection.execute(text("ANALYZE customers"))
            await connection.execute(text("ANALYZE touches"))
        print(f"seeded {customers:,} customers in {time.perf_counter() - started:.1f} s", flush=True)

        reactions = CountingReactions() if with_reactions else None
        settings = LifecycleSettings(sweep_batch_size=batch_size)
        started = time.perf_counter()
        counts = await lifecycle_sweep(make_sessionmaker(engine), settings, NOW, reactions)
        elapsed = time.perf_counter() - started

        expected_churned = sum(1 for g in range(1, customers + 1) if g % 10 in (2, 3))
        expected_at_risk = sum(1 for g in range(1, customers + 1) if g % 10 in (0, 1) or g % 100 == 4)
        ok = counts["churned"] == expected_churned and counts["at_risk"] == expected_at_risk
        moved = counts["churned"] + counts["at_risk"]
        budget = TARGET_SECONDS * customers / 1_000_000
        print(f"sweep: {counts}")
        print(f"{'counts as expected' if ok else 'UNEXPECTED COUNTS'}: at_risk {expected_at_risk:,}, "
              f"churned {expected_churned:,}")
        if reactions is not None:
            print(f"reactions: {reactions.stage_changes:,} stage changes handed to the flow engine")
        print(f"{customers:,} customers ({moved:,} moved) in {elapsed:.2f} s: "
              f"{customers / elapsed:,.0f} customers/s, {moved / elapsed:,.0f} moves/s")
        print(f"target: 1,000,000 customers in {TARGET_SECONDS:.0f} s"
              + (f" (pro rata {budget:.1f} s for {customers:,})" if customers != 1_000_000 else "")
              + f": {elapsed / budget:.2f} of the budget, {'within' if elapsed <= budget else 'OVER'}")
        return 0 if ok and elapsed <= budget else 1
    finally:
        if not keep:
            async with engine.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="postgresql+asyncpg://root@127.0.0.1:5432/test",
                        help="PostgreSQL URL (asyncpg); a schema is created in it and dropped after")
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers to seed (default 1,000,000)")
    parser.add_argument("--schema", default="siyu_bench_lifecycle", help="schema to seed into")
    parser.add_argument("--keep", action="store_true", help="keep the schema after the run")
    parser.add_argument("--with-reactions", action="store_true",
                        help="hand every moved customer to a reactions object (loads them in batches)")
    parser.add_argument("--fillfactor", type=int, default=0,
                        help="override the customers table's fillfactor (default: the schema's, 80)")
    parser.add_argument("--batch-size", type=int, default=LifecycleSettings().sweep_batch_size,
                        help="[lifecycle] sweep_batch_size (customers per transaction)")
    args = parser.parse_args()
    if not args.url.startswith("postgresql+asyncpg://"):
        parser.error("--url must be a postgresql+asyncpg:// URL")
    return asyncio.run(run(args.url, args.customers, args.schema, args.keep, args.with_reactions,
                           args.fillfactor, args.batch_size))


if __name__ == "__main__":
    sys.exit(main())
