"""Official Account callback benchmark: p99 at a fixed rate on SQLite or a database server, the
event loop's lag while background work runs, and the full service against a minimal handler.

One run starts, on 127.0.0.1:
  * the real service, `siyu serve` (in --service mode: the same command with two signal
    handlers added, see `bench_hooks`), with the example config, wechat_mp enabled, a fake
    WeChat API and a freshly migrated database: a SQLite file by default, or --url (emptied);
  * a fake WeChat API (--fake-api mode) whose token endpoint takes --token-delay seconds;
  * a minimal aiohttp + wechatpy handler (--minimal-server mode) that only checks the
    signature, parses and answers, storing nothing;
and puts the same signed text-message load ("几点开门", a fresh MsgId per request, 1,000
customers) on them from a separate load-generator process (--load mode):
  * closed loop: --concurrency keep-alive connections sending back to back for --duration s,
    in --rounds rounds with the two servers taking turns to go first (0: no closed loop);
  * open loop: a fixed timetable at --rate requests/s for --duration s; latency is measured
    from each request's scheduled send time, so queueing is not hidden (coordinated omission);
  * with --background, one more open loop of --background-duration s during which the service
    also runs a lifecycle sweep over --customers customers (seeded in bulk before the service
    starts) and a token refresh against the slow token endpoint, while --events business events
    are imported through POST /api/v1/events (--post-events mode, batches of 100).
A probe task inside the service (bot.app.metrics.watch_loop_lag, every 10 ms) records how late
the event loop wakes it: the loop lag of each open-loop phase.

It prints requests, errors, req/s, p50 and p99 per server and phase, the loop lag, what the
background work did, the full/minimal closed-loop throughput ratio (information only) and
whether the targets are met: p99 < 50 ms at 500 req/s with no errors; under background work no
passive reply missed and loop lag p99 < 20 ms.
These are figures, not assertions: the exit status is 0 whenever the run completes.
Progress goes to stderr; with --json the last stdout line is one JSON object.

    .venv/bin/python bench/webhook.py [--duration 10] [--rounds 3] [--rate 500] [--json]
    .venv/bin/python bench/webhook.py --url postgresql+asyncpg://root@127.0.0.1:5432/siyu_bench
    .venv/bin/python bench/webhook.py --rounds 0 --background
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app.event_loop import EventLoopName, new_event_loop

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PATH = "/wechat/mp"
TOKEN = "siyu-bench-token"
APP_ID = "wx0123456789abcdef"
APP_SECRET = "bench-secret"
API_TOKEN = "siyu-bench-api-token-" + "b" * 32  # the API needs 32 characters or more
ACCOUNT = "gh_siyu_bench"
TEXT = "几点开门"  # matches the example config's business_hours rule: a passive reply
EXPECTED = "10:00"  # in that rule's reply text
CUSTOMERS = 1000
BULK_PREFIX = "o_bulk_"  # the customers seeded for the lifecycle sweep and the imported events
TARGET_P99_MS = 50.0
TARGET_LAG_P99_MS = 20.0
REQUEST_TIMEOUT = 10.0
PROBE_INTERVAL = 0.01
EVENT_BATCH = 100
BACKGROUND_START_DELAY = 1.0  # seconds into the measured background phase
BACKGROUND_WAIT_MAX = 300.0  # how long the background work may run on after the load
MEASURING = "measuring"


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the minimal handler

def run_minimal_server(port: int, event_loop: EventLoopName) -> None:
    """Signature check, parse, answer: what any wechatpy handler must do at the least, on the
    same kind of event loop as the service."""
    from aiohttp import web
    from wechatpy import parse_message
    from wechatpy.exceptions import InvalidSignatureException
    from wechatpy.replies import TextReply
    from wechatpy.utils import check_signature

    reply_text = "亲，我们的门店营业时间是每天 10:00–22:00，线上客服 9:00–21:00。"

    async def receive(request: web.Request) -> web.Response:
        query = request.query
        try:
            check_signature(TOKEN, query.get("signature", ""), query.get("timestamp", ""), query.get("nonce", ""))
        except InvalidSignatureException:
            raise web.HTTPForbidden(text="bad signature") from None
        message = parse_message(await request.text())
        xml = TextReply(content=reply_text, message=message).render()
        return web.Response(text=xml, content_type="application/xml")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post(PATH, receive)
    app.router.add_get("/healthz", healthz)
    loop, _ = new_event_loop(event_loop)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None, loop=loop)


# ---------------------------------------------------------------- the fake WeChat API

def run_fake_api(port: int, token_delay: float) -> None:
    """The token endpoint (slow: `token_delay` s) and customer-service sends (always ok)."""
    from aiohttp import web

    issued = 0

    async def token(request: web.Request) -> web.Response:
        nonlocal issued
        await asyncio.sleep(token_delay)
        issued += 1
        return web.json_response({"access_token": f"bench-token-{issued}", "expires_in": 7200})

    async def send(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/cgi-bin/token", token)
    app.router.add_post("/cgi-bin/message/custom/send", send)
    app.router.add_post("/cgi-bin/message/template/send", send)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


# ---------------------------------------------------------------- the service, with bench hooks

def run_service(config: Path, port: int, figures: Path, log_level: str) -> int:
    """`siyu serve`, exactly, on an app that also answers two signals (see `bench_hooks`)."""
    import bot.app.web as web_module
    from bot.cli.main import main as siyu

    create_app = web_module.create_app

    def create_app_with_bench_hooks(settings: Any, clock: Any = None) -> Any:
        app = create_app(settings, clock)

        async def hooks(app: Any) -> AsyncIterator[None]:
            async for _ in bench_hooks(app, figures):
                yield

        app.cleanup_ctx.append(hooks)
        return app

    web_module.create_app = create_app_with_bench_hooks  # type: ignore[assignment]
    return siyu(["serve", "--config", str(config), "--host", HOST, "--port", str(port), "--log-level", log_level])


async def bench_hooks(app: Any, figures: Path) -> AsyncIterator[None]:
    """Inside the service process: the loop-lag probe, and two signals from the orchestrator.

    SIGUSR1 starts the background work the scheduler would run: a lifecycle sweep (as the
    periodic job runs it, reactions included) and a token refresh (the stored token rejected,
    so the slow endpoint is called). SIGUSR2 writes every lag sample so far, with its
    monotonic time, and what the background work did, to `figures`.
    """
    from bot.app import keys
    from bot.app.metrics import watch_loop_lag
    from bot.app.web import FLOWS
    from bot.channels.wechat_mp.wiring import WECHAT_MP_API
    from flows.lifecycle import lifecycle_sweep

    api = app[WECHAT_MP_API]
    token = await api.access_token()  # the first token, before anything is measured
    samples: list[tuple[float, float]] = []
    probe = asyncio.create_task(watch_loop_lag(lambda lag: samples.append((time.monotonic(), lag)),
                                               interval=PROBE_INTERVAL))
    jobs: dict[str, dict[str, Any]] = {}
    running: set[asyncio.Task[None]] = set()

    async def timed(name: str, work: Any) -> None:
        job = jobs[name] = {"started": time.monotonic()}
        try:
            result = await work
            job["result"] = result if isinstance(result, dict) else None
        except Exception as error:  # noqa: BLE001 - reported, not raised
            job["error"] = repr(error)
        job["seconds"] = round(time.monotonic() - job["started"], 3)

    def start_background() -> None:
        now = app[keys.CLOCK].now()
        work = {"lifecycle sweep": lifecycle_sweep(app[keys.SESSIONS], app[keys.SETTINGS].lifecycle, now, app[FLOWS]),
                "token refresh": api.access_token(rejected=token)}
        for name, coroutine in work.items():
            task = asyncio.create_task(timed(name, coroutine))
            running.add(task)
            task.add_done_callback(running.discard)

    def write_figures() -> None:
        now = time.monotonic()
        state = {name: {**job, "running_for": None if "seconds" in job else round(now - job["started"], 3)}
                 for name, job in jobs.items()}
        temporary = figures.with_suffix(".tmp")
        temporary.write_text(json.dumps({"lag": samples, "jobs": state}))
        temporary.replace(figures)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, start_background)
    loop.add_signal_handler(signal.SIGUSR2, write_figures)
    yield
    probe.cancel()
    for task in list(running):
        task.cancel()
    await asyncio.gather(probe, *running, return_exceptions=True)


# ---------------------------------------------------------------- the business-event import

async def post_events(target: str, count: int, customers: int, seed: int) -> dict[str, Any]:
    """`count` order_paid events for the seeded customers, EVENT_BATCH per request, one request
    after another, as a brand's system catching up would send them."""
    import aiohttp

    occurred = datetime.now(UTC).isoformat()
    tally = {"applied": 0, "duplicate": 0, "error": 0}
    refused: dict[str, int] = {}
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for first in range(0, count, EVENT_BATCH):
            batch = [{"id": f"bench-{seed}-{i}", "type": "order_paid", "occurred_at": occurred,
                      "customer": {"openid": f"{BULK_PREFIX}{(i * 7919) % customers:06d}"},
                      "data": {"order_id": f"B-{seed}-{i}", "amount": "99.00"}}
                     for i in range(first, min(count, first + EVENT_BATCH))]
            try:
                async with session.post(f"{target}/api/v1/events", json=batch,
                                        headers={"Authorization": f"Bearer {API_TOKEN}"}) as response:
                    if response.status != 200:
                        refused[f"HTTP {response.status}"] = refused.get(f"HTTP {response.status}", 0) + 1
                        continue
                    body = await response.json()
            except (aiohttp.ClientError, TimeoutError) as error:
                refused[type(error).__name__] = refused.get(type(error).__name__, 0) + 1
                continue
            for status in tally:
                tally[status] += int(body.get(status, 0))
    return {"events": count, **tally, "refused_requests": refused,
            "seconds": round(time.perf_counter() - started, 3)}


# ---------------------------------------------------------------- the load generator

class Load:
    """Signed text-message callbacks, each with a fresh MsgId, spread over many customers."""

    def __init__(self, base_url: str, seed: int):
        self.url = base_url + PATH
        # Fresh MsgIds across runs and phases too: a repeat would be answered as a retry.
        self._msg_id = 6_000_000_000_000_000_000 + (int(time.time()) % 1_000_000) * 1_000_000_000 \
            + seed * 100_000_000
        self._rng = random.Random(seed)

    def request(self) -> tuple[str, bytes]:
        self._msg_id += 1
        openid = f"o_bench_{self._rng.randrange(CUSTOMERS):04d}"
        ts = str(int(time.time()))
        nonce = str(self._rng.randrange(10**9, 10**10))
        signature = hashlib.sha1("".join(sorted((TOKEN, ts, nonce))).encode()).hexdigest()
        body = (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
                f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{ts}</CreateTime>"
                f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{TEXT}]]></Content>"
                f"<MsgId>{self._msg_id}</MsgId></xml>")
        return f"{self.url}?signature={signature}&timestamp={ts}&nonce={nonce}", body.encode()


class Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _send(session: Any, load: Load, recorder: Recorder, started: float) -> None:
    """One callback; latency from `started` (the send time, or the scheduled send time)."""
    import aiohttp

    url, body = load.request()
    try:
        async with session.post(url, data=body, headers={"Content-Type": "text/xml"}) as response:
            text = await response.text()
            status = response.status
    except TimeoutError:
        recorder.error("timeout")
        return
    except aiohttp.ClientError as error:
        recorder.error(type(error).__name__)
        return
    if status != 200:
        recorder.error(f"HTTP {status}")
    elif EXPECTED not in text:
        recorder.error("no passive reply")  # e.g. `success` after the reply deadline
    else:
        recorder.latencies.append(time.perf_counter() - started)


async def closed_loop(session: Any, load: Load, concurrency: int, duration: float,
                      max_requests: int) -> tuple[Recorder, float]:
    recorder = Recorder()
    begin = time.perf_counter()
    deadline = begin + duration
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            await _send(session, load, recorder, time.perf_counter())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return recorder, time.perf_counter() - begin


async def open_loop(session: Any, load: Load, rate: float, duration: float) -> tuple[Recorder, float]:
    recorder = Recorder()
    total = max(1, int(rate * duration))
    tasks: set[asyncio.Task[None]] = set()
    begin = time.perf_counter()
    for i in range(total):
        scheduled = begin + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # Sent late when the generator falls behind; still timed from the timetable.
        task = asyncio.create_task(_send(session, load, recorder, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 1)
    for task in list(tasks):
        task.cancel()
        recorder.error("unfinished")
    return recorder, time.perf_counter() - begin


def summarise(recorder: Recorder, elapsed: float) -> dict[str, Any]:
    ok = sorted(recorder.latencies)

    def pct(p: float) -> float | None:
        if not ok:
            return None
        return round(ok[min(len(ok) - 1, max(0, int(round(p / 100 * len(ok))) - 1))] * 1000, 2)

    return {"requests": len(ok) + sum(recorder.errors.values()), "ok": len(ok),
            "errors": sum(recorder.errors.values()), "error_kinds": recorder.errors,
            "seconds": round(elapsed, 3), "rps": round(len(ok) / elapsed, 1) if elapsed else 0.0,
            "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": round(ok[-1] * 1000, 2) if ok else None}


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    load = Load(args.target, args.seed)
    connections = args.concurrency if args.phase == "closed" else 512
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if args.warmup > 0:
            await closed_loop(session, load, min(args.concurrency, 8), args.warmup, 10_000)
        print(MEASURING, flush=True)  # the orchestrator starts counting the server's CPU time here
        if args.phase == "closed":
            recorder, elapsed = await closed_loop(session, load, args.concurrency, args.duration,
                                                  args.max_requests)
        else:
            recorder, elapsed = await open_loop(session, load, args.rate, args.duration)
    return summarise(recorder, elapsed)


# ---------------------------------------------------------------- the orchestrator

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def write_config(directory: Path, url: str, api_port: int, event_loop: str = "uvloop") -> Path:
    """The example config with wechat_mp on, the database at `url`, the WeChat API the fake one."""
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text, n_loop = re.subn(r'(?m)^event_loop\s*=\s*"[^"]*"', f'event_loop = "{event_loop}"', text, count=1)
    if n_loop != 1:
        raise SystemExit("config.example.toml changed shape: cannot set [server] event_loop")
    head, marker, tail = text.partition("[channels.wechat_mp]")
    if not marker:
        raise SystemExit("config.example.toml has no [channels.wechat_mp] section")
    tail, n_enabled = re.subn(r"(?m)^enabled\s*=\s*false", "enabled = true", tail, count=1)
    tail, n_api = re.subn(r'(?m)^api_base_url\s*=\s*"[^"]*"',
                          f'api_base_url = "http://{HOST}:{api_port}"', tail, count=1)
    head, n_url = re.subn(r'(?m)^url\s*=\s*"[^"]*"', f'url = "{url}"', head, count=1)
    if (n_enabled, n_api, n_url) != (1, 1, 1):
        raise SystemExit("config.example.toml changed shape: cannot enable wechat_mp / set the database")
    path = directory / "config.toml"
    path.write_text(head + marker + tail, encoding="utf-8")
    return path


async def empty_database(url: str) -> None:
    """Drop everything in a server database, so that the bench migrates it from nothing."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from storage.schema import metadata

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(text("DROP SCHEMA public CASCADE"))
                await connection.execute(text("CREATE SCHEMA public"))
            else:
                await connection.run_sync(metadata.drop_all)
                await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        await engine.dispose()


async def seed_customers(url: str, count: int) -> None:
    """`count` customers in bulk, shaped so that the lifecycle sweep has work: 20% past their
    usual purchase interval (→ at_risk), 10% silent for 200 days and 10% unsubscribed
    (→ churned), the rest active."""
    from sqlalchemy import insert
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from storage.models import Customer

    now = datetime.now(UTC)
    days = [timedelta(days=n) for n in range(400)]

    def row(g: int) -> dict[str, Any]:
        kind = g % 10
        ordered = kind in (0, 1, 3, 4, 5, 6)
        return {
            "channel": "wechat_mp", "external_id": f"{BULK_PREFIX}{g:06d}",
            "stage": {0: "purchase", 1: "purchase", 2: "interest", 3: "loyalty", 4: "use", 5: "use",
                      6: "use"}.get(kind, "contact"),
            "subscribed": kind != 3, "created_at": now - days[399],
            "last_inbound_at": now - (days[200] if kind == 2 else days[g % 30]),
            "last_order_at": now - days[g % 90 + 30] if ordered else None,
            "first_order_at": now - days[300] if ordered else None,
            "purchase_overdue_at": (now - days[1] if kind in (0, 1) else now + days[20] if ordered else None),
            "tags": [], "attributes": {}, "timezone": "Asia/Shanghai", "points_balance": 0,
            "orders_count": 3 if ordered else 0, "lifetime_spend": 0, "marketing_opt_out": False,
            "window_quota": 0, "window_used": 0,
        }

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        for first in range(0, count, 1000):
            async with engine.begin() as connection:
                await connection.execute(insert(Customer), [row(g) for g in range(first, min(count, first + 1000))])
    finally:
        await engine.dispose()


def wait_ready(url: str, process: subprocess.Popen[Any], name: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {timeout:.0f} s")


def stop(process: subprocess.Popen[Any] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process has used so far; None where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_phase(target: str, phase: str, args: argparse.Namespace, seed: int, cpu: int | None, server_pid: int,
               duration: float, on_measuring: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one phase's load generator: its figures, the server's CPU time per request and the
    measured window (monotonic seconds, from the generator's `measuring` line to its end)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--load", "--target", target,
               "--phase", phase, "--duration", str(duration), "--rate", str(args.rate),
               "--concurrency", str(args.concurrency), "--max-requests", str(args.max_requests),
               "--warmup", str(args.warmup), "--seed", str(seed)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    if cpu is not None:
        os.sched_setaffinity(process.pid, {cpu})
    bound = args.warmup + duration + 3 * REQUEST_TIMEOUT + 30
    watchdog = threading.Timer(bound, process.kill)
    watchdog.start()
    cpu_start = cpu_end = None
    window_start = window_end = None
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == MEASURING:
                cpu_start = cpu_seconds(server_pid)
                window_start = time.monotonic()
                if on_measuring is not None:
                    on_measuring()
            else:
                lines.append(line)
        window_end = time.monotonic()
        cpu_end = cpu_seconds(server_pid)
        process.wait()
    finally:
        watchdog.cancel()
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed with status {process.returncode}"
                           + (f" (killed after {bound:.0f} s)" if process.returncode == -signal.SIGKILL else ""))
    row: dict[str, Any] = json.loads(lines[-1])
    used = None if cpu_start is None or cpu_end is None else cpu_end - cpu_start
    row["server_cpu_ms_per_request"] = round(used / row["ok"] * 1000, 3) if used is not None and row["ok"] else None
    row["window"] = (window_start, window_end)
    return row


def read_figures(service: subprocess.Popen[Any], path: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Ask the service (SIGUSR2) for its lag samples and background work so far."""
    path.unlink(missing_ok=True)
    service.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline or service.poll() is not None:
            raise RuntimeError("the service did not write its figures")
        time.sleep(0.05)
    figures: dict[str, Any] = json.loads(path.read_text())
    return figures


def lag_summary(samples: list[list[float]], window: tuple[float | None, float | None]) -> dict[str, Any]:
    start, end = window
    # A sample observed at `at` stands for the hold that ended then: a stall that began inside
    # the window counts even when the loop was free again only after it.
    lags = sorted(lag for at, lag in samples
                  if start is not None and end is not None and at >= start and at - lag - PROBE_INTERVAL <= end)
    if not lags:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "over_20ms": 0}

    def pct(p: float) -> float:
        return round(lags[min(len(lags) - 1, max(0, int(round(p / 100 * len(lags))) - 1))] * 1000, 2)

    return {"samples": len(lags), "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": round(lags[-1] * 1000, 2),
            "over_20ms": sum(lag > TARGET_LAG_P99_MS / 1000 for lag in lags)}


def missed(row: dict[str, Any]) -> int:
    """Callbacks WeChat got no passive reply for: `success` after the deadline, or no answer in time."""
    kinds = row["error_kinds"]
    return int(kinds.get("no passive reply", 0) + kinds.get("timeout", 0) + kinds.get("unfinished", 0))


def background_phase(target: str, service: subprocess.Popen[Any], figures_path: Path, args: argparse.Namespace,
                     seed: int, cpu: int | None) -> dict[str, Any]:
    """The open loop again while the service sweeps, refreshes its token and takes an import."""
    importer: list[subprocess.Popen[str]] = []
    started: list[float] = []

    def begin() -> None:
        service.send_signal(signal.SIGUSR1)
        importer.append(subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--post-events", "--target", target,
             "--events", str(args.events), "--customers", str(args.customers), "--seed", str(seed)],
            stdout=subprocess.PIPE, text=True))
        started.append(time.monotonic())

    timer: list[threading.Timer] = []

    def on_measuring() -> None:
        timer.append(threading.Timer(BACKGROUND_START_DELAY, begin))
        timer[0].start()

    try:
        row = load_phase(target, "open", args, seed, cpu, service.pid, args.background_duration, on_measuring)
    finally:
        for t in timer:
            t.cancel()
    if not importer:
        raise RuntimeError("the background work never started")
    deadline = time.monotonic() + BACKGROUND_WAIT_MAX
    try:
        out, _ = importer[0].communicate(timeout=max(1.0, deadline - time.monotonic()))
        imported = json.loads(out.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        importer[0].kill()
        imported = {"failure": "the import did not finish"}
    imported["finished_after_load"] = started[0] + imported.get("seconds", 0) > row["window"][1]
    figures: dict[str, Any] | None = None
    while True:  # the sweep and the refresh may run on after the load: wait for their durations
        try:
            figures = read_figures(service, figures_path)
        except RuntimeError:  # a loop held for longer than that answers no signal either
            if time.monotonic() > deadline or service.poll() is not None:
                raise
            continue
        if all(job.get("running_for") is None for job in figures["jobs"].values()) and len(figures["jobs"]) == 2:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert figures is not None
    row["lag"] = lag_summary(figures["lag"], row["window"])
    row["jobs"] = figures["jobs"]
    row["import"] = imported
    row["background_started_s"] = round(started[0] - row["window"][0], 2)
    return row


def cpu_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def orchestrate(args: argparse.Namespace) -> int:
    cpus = os.cpu_count() or 1
    pin = args.pin and cpus >= 2
    work = Path(tempfile.mkdtemp(prefix="siyu-bench-"))
    processes: list[subprocess.Popen[Any]] = []
    service_log_path = Path(args.service_log) if args.service_log else work / "service.log"
    service_log = service_log_path.open("wb")
    figures_path = work / "figures.json"
    try:
        url = args.url or f"sqlite+aiosqlite:///{work / 'siyu.db'}"
        siyu = str(Path(sys.executable).parent / "siyu")
        env = {**os.environ, "WECHAT_MP_TOKEN": TOKEN, "WECHAT_APP_ID": APP_ID, "WECHAT_APP_SECRET": APP_SECRET,
               "WECHAT_ENCODING_AES_KEY": "", "SIYU_DATABASE_URL": url, "SIYU_API_TOKEN": API_TOKEN}
        if args.url:
            log(f"emptying {redact(url)}")
            asyncio.run(empty_database(url))
        log(f"migrating {redact(url)}")
        subprocess.run([siyu, "db", "upgrade", "--url", url], check=True, env=env, cwd=work,
                       stdout=service_log, stderr=service_log, timeout=300)
        if args.background:
            started = time.monotonic()
            asyncio.run(seed_customers(url, args.customers))
            log(f"seeded {args.customers:,} customers in {time.monotonic() - started:.1f} s")

        api_port, service_port, minimal_port = free_port(), free_port(), free_port()
        fake_api = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--fake-api", str(api_port),
                                     "--token-delay", str(args.token_delay)], stdout=service_log, stderr=service_log)
        processes.append(fake_api)
        wait_ready(f"http://{HOST}:{api_port}/healthz", fake_api, "the fake WeChat API")
        config = write_config(work, url, api_port, args.event_loop)
        log(f"starting the service on {HOST}:{service_port} (its first token takes {args.token_delay:g} s)"
            + ("" if not args.rounds else f" and the minimal handler on {HOST}:{minimal_port}"))
        service = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--service", str(config),
                                    "--port", str(service_port), "--figures", str(figures_path),
                                    "--log-level", args.log_level],
                                   env=env, cwd=work, stdout=service_log, stderr=service_log)
        processes.append(service)
        minimal = None
        if args.rounds:
            minimal = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--minimal-server",
                                        str(minimal_port), "--event-loop", args.event_loop],
                                       stdout=service_log, stderr=service_log)
            processes.append(minimal)
        if pin:  # servers on CPU 0, load generator on CPU 1
            for process in processes:
                os.sched_setaffinity(process.pid, {0})
        wait_ready(f"http://{HOST}:{service_port}/healthz", service, "the service", timeout=90 + args.token_delay)
        if minimal is not None:
            wait_ready(f"http://{HOST}:{minimal_port}/healthz", minimal, "the minimal handler")

        targets = {"full": f"http://{HOST}:{service_port}", "minimal": f"http://{HOST}:{minimal_port}"}
        pids = {"full": service.pid, "minimal": minimal.pid if minimal else 0}
        results: list[dict[str, Any]] = []
        # The closed loop runs in rounds, the two servers taking turns to go first: on a shared
        # machine whose speed drifts over minutes, a ratio of back-to-back phases drifts with it.
        phases = [("closed", round_, server) for round_ in range(1, args.rounds + 1)
                  for server in (("minimal", "full") if round_ % 2 else ("full", "minimal"))]
        phases += [("open", 1, "minimal")] if args.rounds else []
        phases += [("open", 1, "full")] + ([("background", 1, "full")] if args.background else [])
        for seed, (phase, round_, server) in enumerate(phases, start=1):
            if phase == "closed":
                what = f"round {round_} of {args.rounds}, {args.concurrency} connections, {args.duration:g} s"
            elif phase == "open":
                what = f"{args.rate:g} req/s for {args.duration:g} s"
            else:
                what = (f"{args.rate:g} req/s for {args.background_duration:g} s; after {BACKGROUND_START_DELAY:g} s "
                        f"a lifecycle sweep over {args.customers:,} customers, a {args.token_delay:g} s token "
                        f"refresh and an import of {args.events:,} events")
            log(f"{server}: {phase} loop ({what}, {args.warmup:g} s warm-up)")
            cpu = 1 if pin else None
            if phase == "background":
                row = background_phase(targets[server], service, figures_path, args, seed, cpu)
            else:
                row = load_phase(targets[server], phase, args, seed, cpu, pids[server], args.duration)
                if server == "full" and phase == "open":
                    row["lag"] = lag_summary(read_figures(service, figures_path)["lag"], row["window"])
            row.update(server=server, phase=phase, round=round_)
            results.append(row)
            log(f"{server}: {phase}: {row['ok']} ok, {row['errors']} errors, {row['rps']} req/s, "
                f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                f"server CPU {row['server_cpu_ms_per_request']} ms/request"
                + (f", loop lag p99 {row['lag']['p99_ms']} ms, max {row['lag']['max_ms']} ms" if "lag" in row else ""))
    except (RuntimeError, subprocess.SubprocessError) as error:
        log(f"failed: {error}")
        service_log.close()
        tail = service_log_path.read_text(errors="replace")[-3000:]
        print(tail, file=sys.stderr)
        return 1
    finally:
        for process in reversed(processes):
            stop(process)
        service_log.close()
        shutil.rmtree(work, ignore_errors=True)

    report(results, args, cpus, pin)
    return 0


def closed_total(results: list[dict[str, Any]], server: str) -> dict[str, Any]:
    """One server's closed-loop rounds together: requests/s over all of them, CPU per request."""
    rounds = [r for r in results if r["server"] == server and r["phase"] == "closed"]
    ok, seconds = sum(r["ok"] for r in rounds), sum(r["seconds"] for r in rounds)
    cpu = [r["server_cpu_ms_per_request"] * r["ok"] for r in rounds if r["server_cpu_ms_per_request"] is not None]
    return {"ok": ok, "rps": round(ok / seconds, 1) if seconds else 0.0,
            "server_cpu_ms_per_request": round(sum(cpu) / ok, 3) if ok and len(cpu) == len(rounds) else None}


def database_name(url: str | None) -> str:
    if not url:
        return "SQLite (a fresh file)"
    return {"postgresql": "PostgreSQL", "mysql": "MariaDB/MySQL"}.get(urlsplit(url).scheme.split("+")[0], url)


def report(results: list[dict[str, Any]], args: argparse.Namespace, cpus: int, pin: bool) -> None:
    by = {(r["server"], r["phase"]): r for r in results if r["phase"] != "closed"}
    print(f"Official Account callback, text message \"{TEXT}\" → passive reply; {CUSTOMERS} customers, "
          f"fresh MsgId per request; 127.0.0.1")
    placement = ("servers pinned to CPU 0, load generator to CPU 1" if pin
                 else "servers and load generator share all of them")
    print(f"machine: {cpus} CPU(s), {placement}; figures are for this machine only")
    print(f"database: {database_name(args.url)}; event loop of the servers: {args.event_loop}")
    print(f"closed loop: {args.concurrency} keep-alive connections for {args.duration:g} s per server and round, "
          f"{args.rounds} round(s); open loop: {args.rate:g} req/s for {args.duration:g} s, "
          "latency from the scheduled send time")
    print()
    header = (f"{'server':<8} {'phase':<10} {'requests':>9} {'errors':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'max ms':>8} {'CPU ms/req':>10} {'lag p99':>8} {'lag max':>8}")
    print(header)
    print("-" * len(header))
    for r in results:
        phase = f"closed {r['round']}" if r["phase"] == "closed" else r["phase"]
        lag = r.get("lag") or {}
        print(f"{r['server']:<8} {phase:<10} {r['requests']:>9} {r['errors']:>7} {r['rps']:>9.1f} "
              f"{fmt(r['p50_ms']):>8} {fmt(r['p99_ms']):>8} {fmt(r['max_ms']):>8} "
              f"{cpu_text(r['server_cpu_ms_per_request']):>10} {fmt(lag.get('p99_ms')):>8} {fmt(lag.get('max_ms')):>8}")
    for r in results:
        if r["error_kinds"]:
            print(f"  {r['server']} {r['phase']} errors: "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(r["error_kinds"].items())))
    print(f"(lag: how late the service's event loop woke a {PROBE_INTERVAL * 1000:g} ms timer during the phase, ms)")
    print()
    full_o = by[("full", "open")]
    open_met = (full_o["p99_ms"] is not None and full_o["p99_ms"] < TARGET_P99_MS and full_o["errors"] == 0
                and full_o["rps"] >= 0.95 * args.rate)
    print(f"full service at {args.rate:g} req/s on {database_name(args.url)}: p50 {fmt(full_o['p50_ms'])} ms, "
          f"p99 {fmt(full_o['p99_ms'])} ms, {full_o['rps']:.1f} req/s, {full_o['errors']} errors  "
          f"target p99 < {TARGET_P99_MS:g} ms, 0 errors: {'met' if open_met else 'NOT met'}")
    background_met = None
    if ("full", "background") in by:
        b = by[("full", "background")]
        lag = b["lag"]
        background_met = missed(b) == 0 and lag["p99_ms"] is not None and lag["p99_ms"] < TARGET_LAG_P99_MS
        print(f"with background work: p50 {fmt(b['p50_ms'])} ms, p99 {fmt(b['p99_ms'])} ms, max {fmt(b['max_ms'])} ms, "
              f"{b['errors']} errors, {missed(b)} passive replies missed; loop lag p50 {fmt(lag['p50_ms'])}, "
              f"p99 {fmt(lag['p99_ms'])}, max {fmt(lag['max_ms'])} ms over {lag['samples']} samples "
              f"({lag['over_20ms']} over {TARGET_LAG_P99_MS:g} ms)  target no reply missed, lag p99 < "
              f"{TARGET_LAG_P99_MS:g} ms: {'met' if background_met else 'NOT met'}")
        print(f"  started {b['background_started_s']:g} s into the {args.background_duration:g} s phase:")
        for name, job in b["jobs"].items():
            outcome = job.get("error") or job.get("result")
            took = (f"{job['seconds']:g} s" if job.get("seconds") is not None
                    else f"still running after {job['running_for']:g} s")
            print(f"  {name}: {took}; {outcome}")
        imported = b["import"]
        if "failure" in imported:
            print(f"  import: {imported['failure']}")
        else:
            print(f"  import of {imported['events']:,} events through POST /api/v1/events ({EVENT_BATCH} per request): "
                  f"{imported['seconds']:g} s, {imported['applied']:,} applied, {imported['duplicate']} duplicate, "
                  f"{imported['error']} failed"
                  + (f", refused requests {imported['refused_requests']}" if imported["refused_requests"] else "")
                  + ("; it ran on after the load ended" if imported["finished_after_load"] else ""))
    ratio = per_round = None
    full_c = min_c = None
    if args.rounds:
        full_c, min_c = closed_total(results, "full"), closed_total(results, "minimal")
        ratio = full_c["rps"] / min_c["rps"] if min_c["rps"] else None
        rounds = {(r["server"], r["round"]): r["rps"] for r in results if r["phase"] == "closed"}
        per_round = [rounds[("full", n)] / rounds[("minimal", n)] for n in range(1, args.rounds + 1)
                     if rounds[("minimal", n)]]
        ratio_text = "-" if ratio is None else f"{ratio:.1%}"
        print(f"full / minimal throughput (closed loop, all rounds; information only): {ratio_text}"
              + (" (by round: " + ", ".join(f"{value:.1%}" for value in per_round) + ")" if args.rounds > 1 else ""))
        full_cpu, min_cpu = full_c["server_cpu_ms_per_request"], min_c["server_cpu_ms_per_request"]
        if full_cpu and min_cpu:
            # The server's own cost, whatever bounds the closed loop (the generator shares the CPUs).
            print(f"server CPU per request (closed loop): full {full_cpu:.3f} ms, minimal {min_cpu:.3f} ms "
                  f"({min_cpu / full_cpu:.1%} of the full path's cost)")
        if not pin and cpus <= 2:
            print(f"note: with {cpus} CPU(s) the load generator takes CPU from the server under test; "
                  "the minimal handler's closed-loop figure is partly bounded by the generator.")
    if args.json:
        for r in results:
            r.pop("window", None)
        print(json.dumps({"cpus": cpus, "pinned": pin, "event_loop": args.event_loop,
                          "database": database_name(args.url), "duration_s": args.duration, "rate": args.rate,
                          "concurrency": args.concurrency, "rounds": args.rounds, "results": results,
                          "closed_loop": {"full": full_c, "minimal": min_c},
                          "ratio": None if ratio is None else round(ratio, 4),
                          "ratio_by_round": [round(value, 4) for value in per_round or []],
                          "targets": {"p99_lt_50ms_at_rate": open_met,
                                      "background_no_missed_reply_lag_p99_lt_20ms": background_met}},
                         ensure_ascii=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark the Official Account callback: p99 at a fixed rate, loop lag under background "
                    "work, and the full service against a minimal aiohttp + wechatpy handler.")
    parser.add_argument("--url", help="the service's database: a postgresql+asyncpg:// or mysql+aiomysql:// URL "
                                      "on 127.0.0.1, EMPTIED and migrated by the bench (default: a fresh SQLite file)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase (default 10)")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s (default 500)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="closed-loop rounds, the servers taking turns to go first; 0: no closed loop and no "
                             "minimal handler (default 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop connections (default 32)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each phase (default 2)")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="closed-loop request cap per phase (default 200000)")
    parser.add_argument("--background", action="store_true",
                        help="one more open-loop phase with a lifecycle sweep, a slow token refresh and an import")
    parser.add_argument("--background-duration", type=float, default=30.0,
                        help="seconds of the background phase (default 30)")
    parser.add_argument("--customers", type=int, default=100_000,
                        help="customers seeded for the lifecycle sweep (default 100000)")
    parser.add_argument("--events", type=int, default=10_000, help="business events imported (default 10000)")
    parser.add_argument("--token-delay", type=float, default=5.0,
                        help="seconds the fake token endpoint takes to answer (default 5)")
    parser.add_argument("--pin", action="store_true",
                        help="pin the servers to CPU 0 and the load generator to CPU 1")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="the service's log level (default WARNING)")
    parser.add_argument("--service-log", metavar="FILE",
                        help="keep the log of the service and the helper servers in FILE (default: discarded)")
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON object of the figures")
    parser.add_argument("--event-loop", default="uvloop", choices=get_args(EventLoopName),
                        help="the event loop of both servers: the service's [server] event_loop (default uvloop)")
    parser.add_argument("--minimal-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--fake-api", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--service", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--figures", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--post-events", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["closed", "open"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 600 or args.rate <= 0 or args.rate > 20_000 \
            or not 1 <= args.concurrency <= 512 or args.warmup < 0 or args.warmup > 60 \
            or not 1 <= args.max_requests <= 10_000_000 or not 0 <= args.rounds <= 20 \
            or not 2 < args.background_duration <= 600 or not 1_000 <= args.customers <= 2_000_000 \
            or not 1 <= args.events <= 1_000_000 or not 0 <= args.token_delay <= 9:
        parser.error("bounds: 0 < duration <= 600, 0 < rate <= 20000, 1 <= concurrency <= 512, "
                     "0 <= warmup <= 60, 1 <= max-requests <= 10000000, 0 <= rounds <= 20, "
                     "2 < background-duration <= 600, 1000 <= customers <= 2000000, 1 <= events <= 1000000, "
                     "0 <= token-delay <= 9 (the service gives up on WeChat after 10 s)")
    if args.url:
        parts = urlsplit(args.url)
        if parts.scheme not in ("postgresql+asyncpg", "mysql+aiomysql") or parts.hostname not in (HOST, "localhost"):
            parser.error(f"--url must be a postgresql+asyncpg:// or mysql+aiomysql:// URL on {HOST}")

    if args.minimal_server:
        run_minimal_server(args.minimal_server, args.event_loop)
        return 0
    if args.fake_api:
        run_fake_api(args.fake_api, args.token_delay)
        return 0
    if args.service:
        return run_service(Path(args.service), args.port, Path(args.figures), args.log_level)
    if args.load or args.post_events:
        if not args.target or not args.target.startswith(f"http://{HOST}:"):
            parser.error(f"--target must be http://{HOST}:PORT")
        work = run_load(args) if args.load else post_events(args.target, args.events, args.customers, args.seed)
        print(json.dumps(asyncio.run(work)), flush=True)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
