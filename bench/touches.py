"""Benchmark: proactive messages through the outbox vs. one APScheduler job per message.

Outbox: `enqueue_touches` (`--enqueue-batch` per call and transaction, default 1,000, as a
broadcast or import would) into `--url` (default: a fresh SQLite file), then
`dispatch_due_touches` with the real WeChat sender against a fake WeChat API running in its own
process.
Naive: APScheduler 3.x with a `SQLAlchemyJobStore` on `--naive-url` (a synchronous driver; default
a fresh SQLite file through the stdlib `sqlite3`), one date job per message, each job pushing
through the same fake API.
Ceiling: the same aiohttp client and sender pushing the same messages to the same fake API with
no database at all (`--ceiling-count`, default at most 20,000), as many in flight as the client's
connection limit allows: what this machine allows one Python process, whatever the outbox does.
Prints messages/s added and dispatched for each, the ratios, dispatched as a fraction of the
ceiling, and the load average next to each figure. Figures only, no assertions.

    .venv/bin/python bench/touches.py [--count 100000] [--naive-count 10000]
    .venv/bin/python bench/touches.py --url postgresql+asyncpg://root@127.0.0.1:5432/siyu_bench \\
        --naive-url postgresql+psycopg://root@127.0.0.1:5432/siyu_bench

Use an empty database for `--url` (it is migrated, then filled); the job store creates its own
table and drops it after. `--processes N` dispatches from N processes at once (as N `siyu serve`
would; PostgreSQL or MySQL). The naive design adds one job row per commit and deletes it after running, so it is timed
on `--naive-count` messages (default: at most 10,000) to keep the run short; rates are per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp
from aiohttp import web
from sqlalchemy import insert

from bot.channels.base import Text
from bot.channels.wechat_mp.api import WechatApi
from bot.channels.wechat_mp.sender import WechatMpSender
from bot.clock import SystemClock
from bot.outbox.dispatch import dispatch_due_touches
from bot.outbox.policy import TouchPolicySettings
from flows.push_window import UNLIMITED
from storage.db import make_engine, make_sessionmaker
from storage.migrate import upgrade
from storage.models import Customer
from storage.touches import enqueue_touches

APP_ID, APP_SECRET = "wxbench", "bench-secret"
CUSTOMERS = 1000


# ---- the fake WeChat API, in its own process (hidden --fake-wechat mode) ------------------

def fake_wechat_app() -> web.Application:
    """Token and customer-service send; `GET /count` says how many sends arrived."""
    sent = 0

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "bench-token", "expires_in": 7200})

    async def send(request: web.Request) -> web.Response:
        nonlocal sent
        await request.read()
        sent += 1
        return web.Response(text='{"errcode":0,"errmsg":"ok"}', content_type="application/json")

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"sent": sent})

    app = web.Application()
    app.router.add_get("/cgi-bin/token", token)
    app.router.add_post("/cgi-bin/message/custom/send", send)
    app.router.add_get("/count", count)
    return app


class FakeWechat:
    """Runs `fake_wechat_app` in a child process on a free port."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.process = subprocess.Popen([sys.executable, __file__, "--fake-wechat", "0"], stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        port = int((await asyncio.to_thread(self.process.stdout.readline)).strip())
        self.base_url = f"http://127.0.0.1:{port}"
        await self.sent(http)

    async def sent(self, http: aiohttp.ClientSession) -> int:
        async with http.get(self.base_url + "/count") as response:
            return int((await response.json())["sent"])

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


def serve_fake_wechat(port: int) -> None:
    async def run() -> None:
        runner = web.AppRunner(fake_wechat_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop  # type: ignore[import-not-found]
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run())


# ---- the outbox ---------------------------------------------------------------------------

async def _dispatch(url: str, concurrency: int, batch_size: int, api_base: str,
                    http: aiohttp.ClientSession, ready: Any = None) -> Any:
    engine = make_engine(url, pool_size=concurrency + 2)
    sessions = make_sessionmaker(engine)
    settings = TouchPolicySettings(quiet_hours_start=clock_time(0), quiet_hours_end=clock_time(0),
                                   batch_size=batch_size, concurrency=concurrency)
    api = WechatApi(http, sessions, SystemClock(), base_url=api_base, app_id=APP_ID, app_secret=APP_SECRET)
    sender = WechatMpSender(api)
    await sender.prepare()
    if ready is not None:
        await ready()
    try:
        return await dispatch_due_touches(sessions, {"wechat_mp": sender}, settings, SystemClock(), "bench")
    finally:
        await engine.dispose()


def dispatch_worker(url: str, concurrency: int, batch_size: int, api_base: str) -> None:
    """Hidden --dispatch-worker mode: one more dispatching process (as `siyu serve` would be)."""
    async def run() -> None:
        async def ready() -> None:
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)

        connector = aiohttp.TCPConnector(limit=concurrency + 2)
        async with aiohttp.ClientSession(connector=connector) as http:
            stats = await _dispatch(url, concurrency, batch_size, api_base, http, ready)
        print(json.dumps({"sent": stats.sent, "errors": stats.errors}), flush=True)

    asyncio.run(run())


async def _dispatch_in_processes(processes: int, url: str, concurrency: int, batch_size: int,
                                 api_base: str) -> tuple[int, float]:
    children = [subprocess.Popen([sys.executable, __file__, "--dispatch-worker", url, str(concurrency),
                                  str(batch_size), api_base], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                for _ in range(processes)]
    for child in children:
        assert child.stdout is not None
        assert (await asyncio.to_thread(child.stdout.readline)).strip() == b"ready"
    started = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
    sent = 0
    for child in children:
        assert child.stdout is not None
        sent += json.loads(await asyncio.to_thread(child.stdout.readline))["sent"]
    elapsed = time.perf_counter() - started
    for child in children:
        child.wait(timeout=30)
    return sent, elapsed


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


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


async def bench_outbox(url: str, count: int, concurrency: int, batch_size: int, processes: int, fake: FakeWechat,
                       http: aiohttp.ClientSession, enqueue_batch: int = 1000) -> dict[str, Any]:
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url, pool_size=concurrency + 2)
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    customers = await _seed_customers(sessions, now)
    started = time.perf_counter()
    for first in range(0, count, enqueue_batch):
        async with sessions() as session, session.begin():
            await enqueue_touches(session, [
                {"customer_id": customers[n % CUSTOMERS], "kind": "service", "due_at": now,
                 "body": {"type": "text", "text": f"您的订单 {n} 已发货"}, "idempotency_key": f"bench-{n}"}
                for n in range(first, min(first + enqueue_batch, count))], now=now)
    added = time.perf_counter() - started
    added_load = load()
    await engine.dispose()
    before = await fake.sent(http)
    if processes > 1:
        sent, dispatched = await _dispatch_in_processes(processes, url, concurrency, batch_size, fake.base_url)
    else:
        started = time.perf_counter()
        sent = (await _dispatch(url, concurrency, batch_size, fake.base_url, http)).sent
        dispatched = time.perf_counter() - started
    arrived = await fake.sent(http) - before
    assert sent == count == arrived, (sent, arrived)
    return {"count": count, "added_per_s": count / added, "added_load": added_load,
            "dispatched_per_s": count / dispatched, "dispatched_load": load()}


# ---- the ceiling: the same client and sender, no database ------------------------------------

async def bench_ceiling(url: str, count: int, in_flight: int, fake: FakeWechat,
                        http: aiohttp.ClientSession) -> dict[str, Any]:
    engine = make_engine(url)  # only for the access token, fetched before the clock starts
    api = WechatApi(http, make_sessionmaker(engine), SystemClock(), base_url=fake.base_url, app_id=APP_ID,
                    app_secret=APP_SECRET)
    sender = WechatMpSender(api)
    await sender.prepare()
    numbers = iter(range(count))

    async def push() -> None:
        for n in numbers:
            await sender.send(f"o-bench-{n % CUSTOMERS}", Text(f"您的订单 {n} 已发货"))

    before = await fake.sent(http)
    started = time.perf_counter()
    await asyncio.gather(*(push() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    assert await fake.sent(http) - before == count
    await engine.dispose()
    return {"count": count, "in_flight": in_flight, "dispatched_per_s": count / elapsed, "dispatched_load": load()}


# ---- the naive design: APScheduler stores a reference to this function in each job row ----

_naive_http: aiohttp.ClientSession | None = None
_naive_url = ""


async def naive_send(openid: str, text: str) -> None:
    assert _naive_http is not None
    payload = {"touser": openid, "msgtype": "text", "text": {"content": text}}
    body = json.dumps(payload, ensure_ascii=False).encode()
    async with _naive_http.post(_naive_url, params={"access_token": "bench-token"}, data=body,
                                headers={"Content-Type": "application/json; charset=utf-8"}) as response:
        await response.read()


async def bench_naive(url: str, count: int, fake: FakeWechat, http: aiohttp.ClientSession) -> dict[str, Any]:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    global _naive_http, _naive_url
    _naive_url = fake.base_url + "/cgi-bin/message/custom/send"
    store = SQLAlchemyJobStore(url=url)
    scheduler = AsyncIOScheduler(
        jobstores={"default": store},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1}, timezone="UTC",
    )
    scheduler.start(paused=True)
    due = datetime.now(UTC)
    started = time.perf_counter()
    for n in range(count):
        scheduler.add_job(naive_send, "date", run_date=due, args=[f"o-bench-{n % CUSTOMERS}", f"您的订单 {n} 已发货"],
                          id=f"touch-{n}")
    added = time.perf_counter() - started
    added_load = load()
    before = await fake.sent(http)
    _naive_http = http
    started = time.perf_counter()
    scheduler.resume()
    while await fake.sent(http) - before < count:
        await asyncio.sleep(0.05)
    dispatched = time.perf_counter() - started
    dispatched_load = load()
    scheduler.shutdown(wait=False)
    store.jobs_t.drop(store.engine)
    store.engine.dispose()
    _naive_http = None
    return {"count": count, "added_per_s": count / added, "added_load": added_load,
            "dispatched_per_s": count / dispatched, "dispatched_load": dispatched_load}


def _backend(url: str) -> str:
    from sqlalchemy.engine import make_url
    parsed = make_url(url)
    return f"{parsed.get_backend_name()}/{parsed.get_driver_name()}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="touches through the outbox (default 100000)")
    parser.add_argument("--naive-count", type=int, default=None,
                        help="jobs for the APScheduler design (default: min(count, 10000))")
    parser.add_argument("--url", help="outbox database, an empty one (default: a fresh SQLite file)")
    parser.add_argument("--naive-url", help="job store, a synchronous driver (default: a fresh SQLite file)")
    parser.add_argument("--concurrency", type=int, default=32, help="WeChat calls in flight (default 32)")
    parser.add_argument("--batch-size", type=int, default=1000, help="touches per claim (default 1000)")
    parser.add_argument("--enqueue-batch", type=int, default=1000,
                        help="touches per enqueue_touches call and transaction (default 1000)")
    parser.add_argument("--processes", type=int, default=1,
                        help="dispatch from this many processes at once (PostgreSQL/MySQL; default 1)")
    parser.add_argument("--skip-naive", action="store_true", help="only the outbox (and the ceiling)")
    parser.add_argument("--ceiling-count", type=int, default=None,
                        help="pushes with no database, for the ceiling (default: min(count, 20000); 0: skip)")
    parser.add_argument("--json", action="store_true", help="end with one JSON object holding every figure")
    args = parser.parse_args()
    naive_count = args.naive_count or min(args.count, 10_000)
    ceiling_count = min(args.count, 20_000) if args.ceiling_count is None else args.ceiling_count
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite+aiosqlite:///{Path(tmp) / 'outbox.db'}"
        naive_url = args.naive_url or f"sqlite:///{Path(tmp) / 'apscheduler.db'}"
        in_flight = max(args.concurrency, 10) + 2
        connector = aiohttp.TCPConnector(limit=in_flight)
        async with aiohttp.ClientSession(connector=connector) as http:
            fake = FakeWechat()
            await fake.start(http)
            try:
                out = figures["outbox"] = await bench_outbox(url, args.count, args.concurrency, args.batch_size,
                                                             args.processes, fake, http, args.enqueue_batch)
                print(f"outbox      {out['count']:>7} touches ({_backend(url)}, enqueued {args.enqueue_batch} per call, "
                      f"{args.concurrency} calls in flight"
                      f"{f', {args.processes} processes' if args.processes > 1 else ''}): "
                      f"added {out['added_per_s']:9,.0f}/s ({out['added_load']})   "
                      f"dispatched {out['dispatched_per_s']:8,.0f}/s ({out['dispatched_load']})", flush=True)
                if ceiling_count:
                    top = figures["ceiling"] = await bench_ceiling(url, ceiling_count, in_flight, fake, http)
                    figures["ceiling_fraction"] = out["dispatched_per_s"] / top["dispatched_per_s"]
                    print(f"ceiling     {top['count']:>7} pushes (same client and fake API, no database, "
                          f"{in_flight} in flight): dispatched {top['dispatched_per_s']:8,.0f}/s "
                          f"({top['dispatched_load']})   outbox dispatch at {figures['ceiling_fraction']:.0%} "
                          f"of it", flush=True)
                if not args.skip_naive:
                    naive = figures["apscheduler"] = await bench_naive(naive_url, naive_count, fake, http)
                    print(f"APScheduler {naive['count']:>7} jobs (SQLAlchemyJobStore, {_backend(naive_url)}): "
                          f"added {naive['added_per_s']:9,.0f}/s ({naive['added_load']})   "
                          f"dispatched {naive['dispatched_per_s']:8,.0f}/s ({naive['dispatched_load']})")
                    figures["ratio_added"] = out["added_per_s"] / naive["added_per_s"]
                    figures["ratio_dispatched"] = out["dispatched_per_s"] / naive["dispatched_per_s"]
                    print(f"ratio outbox/APScheduler: added {figures['ratio_added']:.1f}x   "
                          f"dispatched {figures['ratio_dispatched']:.1f}x")
            finally:
                fake.stop()
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--fake-wechat":
        serve_fake_wechat(int(sys.argv[2]))
    elif len(sys.argv) == 6 and sys.argv[1] == "--dispatch-worker":
        dispatch_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        asyncio.run(main())
