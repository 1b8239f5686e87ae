"""`siyu import FILE` as an operator runs it: CSV and JSONL with a bad line, then again."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from storage.models import BusinessEvent, Order
from tests.support.db import customer_row, rows

ROOT = Path(__file__).resolve().parents[2]

# The README's example, plus a bad amount and a phone that matches nobody.
CSV = """\
id,type,occurred_at,openid,unionid,phone,order_id,amount,items,delta,reason
evt-1001,order_paid,2026-11-23T10:00:00+08:00,o123,,13800138000,A1001,199.00,"[{""sku"": ""TEE-01"", ""qty"": 1}]",,
evt-1002,points_changed,2026-11-23T11:00:00+08:00,,,13800138000,,,,-50,兑换小样
evt-1003,order_paid,2026-11-23T12:00:00+08:00,o123,,,A1003,lots,,,
evt-1004,store_visit,2026-11-23T12:00:00+08:00,,,13900000000,,,,,
"""


def siyu(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SIYU_CONFIG", "SIYU_DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_import_csv_keeps_good_rows_and_names_bad_ones(sqlite_url, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(CSV, encoding="utf-8")
    done = siyu("import", str(path), "--url", sqlite_url, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip() == f"{path}: 4 rows: 2 applied, 0 duplicate, 2 failed"
    errors = [line for line in done.stderr.splitlines() if not line.startswith("…")]
    assert errors == [
        f"{path}:4: evt-1003: data.amount: Input should be a valid decimal",
        f"{path}:5: evt-1004: customer.phone: no customer has this phone; give an openid to create one",
    ]
    customer = asyncio.run(customer_row(sqlite_url, "o123"))
    assert (customer.orders_count, customer.points_balance, customer.phone) == (1, 149, "13800138000")
    [order] = asyncio.run(rows(sqlite_url, Order))
    assert (order.order_id, order.amount, order.items) == ("A1001", Decimal("199.00"), [{"sku": "TEE-01", "qty": 1}])

    again = siyu("import", str(path), "--url", sqlite_url, cwd=tmp_path)
    assert again.stdout.strip() == f"{path}: 4 rows: 0 applied, 2 duplicate, 2 failed"
    assert len(asyncio.run(rows(sqlite_url, BusinessEvent))) == 2


def test_import_jsonl_with_a_broken_line_and_progress(sqlite_url, tmp_path):
    lines = [json.dumps({"id": f"v-{i}", "type": "store_visit", "occurred_at": "2026-11-23T10:00:00+08:00",
                         "customer": {"openid": f"o-{i % 40}"}, "data": {"store_id": "SH-01"}})
             for i in range(120)]
    lines.insert(2, '{"id": "broken", "type": ')
    lines.insert(3, "")
    path = tmp_path / "visits.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = siyu("import", str(path), "--url", sqlite_url, "--progress-every", "100", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.strip() == f"{path}: 121 rows: 120 applied, 0 duplicate, 1 failed"
    assert f"{path}:3: not JSON:" in done.stderr
    assert "… 100 rows (" in done.stderr  # progress for a large file
    assert asyncio.run(customer_row(sqlite_url, "o-7")).stage == "interest"  # 3 store visits


def test_import_help_and_a_file_without_the_columns(sqlite_url, tmp_path):
    done = siyu("import", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "id,type,occurred_at" in done.stdout
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("order,amount\nA1,10\n", encoding="utf-8")
    done = siyu("import", str(bad_header), "--url", sqlite_url, cwd=tmp_path)
    assert done.returncode == 2 and "the header lacks id, type, occurred_at" in done.stderr


def test_imported_events_start_flows_like_the_api_does(sqlite_url, tmp_path):
    from storage.models import FlowRun

    path = tmp_path / "carts.jsonl"
    path.write_text(json.dumps({"id": "cart-1", "type": "cart_abandoned", "occurred_at": "2026-11-23T10:00:00+08:00",
                                "customer": {"openid": "o-cart"}, "data": {"sku": "TEE-01"}}) + "\n",
                    encoding="utf-8")
    done = siyu("import", str(path), "--config", str(ROOT / "config.example.toml"), "--url", sqlite_url,
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [run] = asyncio.run(rows(sqlite_url, FlowRun))
    assert (run.flow, run.status, run.trigger) == ("purchase_nudge", "waiting", "event:cart_abandoned")
