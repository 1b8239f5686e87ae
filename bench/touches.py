"""Benchmark: proactive messages through the outbox vs. one APScheduler job per message.

Outbox: `enqueue_touches` (1,000 per statement, as a broadcast or import would) into a fresh SQLite file,
then `dispatch_due_touches` with the real WeChat sender against a local fake WeChat API.
Naive: APScheduler 3.x with a `SQLAlchemyJobStore` on SQLite (the stdlib `sqlite3` sync driver),
one date job per message, each job pushing through the same fake API.
Prints messages/s added and dispatched for both and the ratios. Figures only, no assertions.

    .venv/bin/python bench/touches.py [--count 100000] [--naive-count 10000]

The naive design adds one job row per commit and deletes it after running, so it is timed on
`--naive-count` messages (default: at most 10,000) to keep the run short; rates are per second.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, time as clock_time, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from bot.channels.wechat_api import WechatApi  # noqa: E402
from bot.channels.wechat_mp import WechatMpSender  # noqa: E402
from bot.clock import SystemClock  # noqa: E402
from bot.touch_dispatch import dispatch_due_touches  # noqa: E402
from bot.touch_policy import UNLIMITED, TouchPolicySettings  # noqa: E402
from bot.touches import enqueue_touches  # noqa: E402
from storage.db import make_engine, make_sessionmaker  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Customer  # noqa: E402

APP_ID, APP_SECRET = "wxbench", "bench-secret"
CUSTOMERS = 1000


class FakeWechat:
    """Token and customer-service send; counts what arrives."""

    def __init__(self) -> None:
        self.sent = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self._token)
        app.router.add_post("/cgi-bin/message/custom/send", self._send)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        return web.json_response({"access_token": "bench-token", "expires_in": 7200})

    async def _send(self, request: web.Request) -> web.Response:
        await request.read()
        self.sent += 1
        return web.json_response({"errcode": 0, "errmsg": "ok"})


async def _seed_customers(sessions: Any, now: datetime) -> list[int]:
    async with sessions() as session, session.begin():
        result = await session.execute(insert(Customer).returning(Customer.id), [
            {"channel": "wechat_mp", "external_id": f"o-bench-{n}", "created_at": now, "stage": "contact",
             "subscribed": True, "tags": [], "attributes": {}, "timezone": "Asia/Shanghai", "points_balance": 0,
             "orders_count": 0, "lifetime_spend": 0, "marketing_opt_out": False,
             # a payment's window: unlimited messages, so every touch is sendable
             "window_expires_at": now + timedelta(hours=47), "window_quota": UNLIMITED, "window_used": 0}
            for n in range(CUSTOMERS)])
        return list(result.scalars())


async def bench_outbox(count: int, workdir: Path, api_base: str, fake: FakeWechat) -> tuple[float, float]:
    url = f"sqlite+aiosqlite:///{workdir / 'outbox.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    customers = await _seed_customers(sessions, now)
    started = time.perf_counter()
    for first in range(0, count, 1000):
        async with sessions() as session, session.begin():
            await enqueue_touches(session, [
                {"customer_id": customers[n % CUSTOMERS], "kind": "service", "due_at": now,
                 "body": {"type": "text", "text": f"您的订单 {n} 已发货"}, "idempotency_key": f"bench-{n}"}
                for n in range(first, min(first + 1000, count))], now=now)
    added = time.perf_counter() - started
    settings = TouchPolicySettings(quiet_hours_start=clock_time(0), quiet_hours_end=clock_time(0),
                                   batch_size=1000)
    fake.sent = 0
    async with aiohttp.ClientSession() as http:
        api = WechatApi(http, sessions, SystemClock(), base_url=api_base, app_id=APP_ID, app_secret=APP_SECRET)
        started = time.perf_counter()
        stats = await dispatch_due_touches(sessions, {"wechat_mp": WechatMpSender(api)}, settings,
                                           SystemClock(), "bench")
        dispatched = time.perf_counter() - started
    await engine.dispose()
    assert stats.sent == count == fake.sent, (stats, fake.sent)
    return count / added, count / dispatched


# The naive design: APScheduler stores a reference to this function in each job row.
_naive_http: aiohttp.ClientSession | None = None
_naive_url = ""


async def naive_send(openid: str, text: str) -> None:
    assert _naive_http is not None
    payload = {"touser": openid, "msgtype": "text", "text": {"content": text}}
    async with _naive_http.post(_naive_url, params={"access_token": "bench-token"}, json=payload) as response:
        await response.read()


async def bench_naive(count: int, workdir: Path, api_base: str, fake: FakeWechat) -> tuple[float, float]:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    global _naive_http, _naive_url
    _naive_url = api_base + "/cgi-bin/message/custom/send"
    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{workdir / 'apscheduler.db'}")},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1}, timezone="UTC",
    )
    scheduler.start(paused=True)
    due = datetime.now(UTC)
    started = time.perf_counter()
    for n in range(count):
        scheduler.add_job(naive_send, "date", run_date=due, args=[f"o-bench-{n % CUSTOMERS}", f"您的订单 {n} 已发货"],
                          id=f"touch-{n}")
    added = time.perf_counter() - started
    fake.sent = 0
    async with aiohttp.ClientSession() as http:
        _naive_http = http
        started = time.perf_counter()
        scheduler.resume()
        while fake.sent < count:
            await asyncio.sleep(0.01)
        dispatched = time.perf_counter() - started
        scheduler.shutdown(wait=False)
        _naive_http = None
    return count / added, count / dispatched


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="touches through the outbox (default 100000)")
    parser.add_argument("--naive-count", type=int, default=None,
                        help="jobs for the APScheduler design (default: min(count, 10000))")
    args = parser.parse_args()
    naive_count = args.naive_count or min(args.count, 10_000)
    fake = FakeWechat()
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    api_base = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            out_add, out_send = await bench_outbox(args.count, workdir, api_base, fake)
            print(f"outbox     ({args.count:>7} touches, SQLite): added {out_add:10,.0f}/s   "
                  f"dispatched {out_send:9,.0f}/s")
            naive_add, naive_send_rate = await bench_naive(naive_count, workdir, api_base, fake)
            print(f"APScheduler({naive_count:>7} jobs, SQLAlchemyJobStore on SQLite/sqlite3): added "
                  f"{naive_add:10,.0f}/s   dispatched {naive_send_rate:9,.0f}/s")
            print(f"ratio outbox/APScheduler: added {out_add / naive_add:.1f}x   "
                  f"dispatched {out_send / naive_send_rate:.1f}x")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
