"""Official Account callback benchmark: the full service against a minimal wechatpy handler.

One run starts, on 127.0.0.1:
  * the real service, `siyu serve`, with the example config, wechat_mp enabled and a fresh,
    migrated SQLite file (the whole path: verify, parse, store, route, passive reply);
  * a minimal aiohttp + wechatpy handler (this file in --minimal-server mode) that only checks
    the signature, parses and answers, storing nothing;
and puts the same signed text-message load ("几点开门", a fresh MsgId per request, 1,000
customers) on each from a separate load-generator process (this file in --load mode):
  * closed loop: --concurrency keep-alive connections sending back to back for --duration s,
    in --rounds rounds (default 3) with the two servers taking turns to go first, so that a
    machine whose speed drifts between phases moves both alike;
  * open loop: a fixed timetable at --rate requests/s for --duration s; latency is measured
    from each request's scheduled send time, so queueing is not hidden (coordinated omission).

It prints requests, errors, req/s, p50 and p99 per server and phase, the full/minimal
throughput ratio over all rounds (and by round) and whether the targets are met (ratio >= 50 %,
p99 < 50 ms at 500 req/s).
These are figures, not assertions: the exit status is 0 whenever the run completes.
Progress goes to stderr; with --json the last stdout line is one JSON object.

    .venv/bin/python bench/webhook.py [--duration 10] [--rounds 3] [--rate 500] [--concurrency 32] [--json]
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
from pathlib import Path
from typing import Any, get_args

from bot.app.event_loop import EventLoopName, new_event_loop

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PATH = "/wechat/mp"
TOKEN = "siyu-bench-token"
APP_ID = "wx0123456789abcdef"
APP_SECRET = "bench-secret"
ACCOUNT = "gh_siyu_bench"
TEXT = "几点开门"  # matches the example config's business_hours rule: a passive reply
EXPECTED = "10:00"  # in that rule's reply text
CUSTOMERS = 1000
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
REQUEST_TIMEOUT = 10.0
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


def write_config(directory: Path, database: Path, unused_port: int, event_loop: str = "uvloop") -> Path:
    """The example config with wechat_mp on, pushes aimed at a closed local port."""
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text, n_loop = re.subn(r'(?m)^event_loop\s*=\s*"[^"]*"', f'event_loop = "{event_loop}"', text, count=1)
    if n_loop != 1:
        raise SystemExit("config.example.toml changed shape: cannot set [server] event_loop")
    head, marker, tail = text.partition("[channels.wechat_mp]")
    if not marker:
        raise SystemExit("config.example.toml has no [channels.wechat_mp] section")
    tail, n_enabled = re.subn(r"(?m)^enabled\s*=\s*false", "enabled = true", tail, count=1)
    tail, n_api = re.subn(r'(?m)^api_base_url\s*=\s*"[^"]*"',
                          f'api_base_url = "http://{HOST}:{unused_port}"', tail, count=1)
    head, n_url = re.subn(r'(?m)^url\s*=\s*"[^"]*"', f'url = "sqlite+aiosqlite:///{database}"', head, count=1)
    if (n_enabled, n_api, n_url) != (1, 1, 1):
        raise SystemExit("config.example.toml changed shape: cannot enable wechat_mp / set the database")
    path = directory / "config.toml"
    path.write_text(head + marker + tail, encoding="utf-8")
    return path


def wait_ready(url: str, process: subprocess.Popen[bytes], name: str, timeout: float = 60.0) -> None:
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


def stop(process: subprocess.Popen[bytes] | None) -> None:
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


def load_phase(target: str, phase: str, args: argparse.Namespace, seed: int,
               cpu: int | None, server_pid: int) -> dict[str, Any]:
    """Run one phase's load generator; its figures plus the server's CPU time per request."""
    command = [sys.executable, str(Path(__file__).resolve()), "--load", "--target", target,
               "--phase", phase, "--duration", str(args.duration), "--rate", str(args.rate),
               "--concurrency", str(args.concurrency), "--max-requests", str(args.max_requests),
               "--warmup", str(args.warmup), "--seed", str(seed)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    if cpu is not None:
        os.sched_setaffinity(process.pid, {cpu})
    bound = args.warmup + args.duration + 3 * REQUEST_TIMEOUT + 30
    watchdog = threading.Timer(bound, process.kill)
    watchdog.start()
    cpu_start = cpu_end = None
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == MEASURING:
                cpu_start = cpu_seconds(server_pid)
            else:
                lines.append(line)
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
    return row


def cpu_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def orchestrate(args: argparse.Namespace) -> int:
    cpus = os.cpu_count() or 1
    pin = args.pin and cpus >= 2
    work = Path(tempfile.mkdtemp(prefix="siyu-bench-"))
    service: subprocess.Popen[bytes] | None = None
    minimal: subprocess.Popen[bytes] | None = None
    service_log = (work / "service.log").open("wb")
    try:
        database = work / "siyu.db"
        url = f"sqlite+aiosqlite:///{database}"
        config = write_config(work, database, free_port(), args.event_loop)
        env = {**os.environ, "WECHAT_MP_TOKEN": TOKEN, "WECHAT_APP_ID": APP_ID,
               "WECHAT_APP_SECRET": APP_SECRET, "WECHAT_ENCODING_AES_KEY": "", "SIYU_DATABASE_URL": url}
        siyu = str(Path(sys.executable).parent / "siyu")
        log(f"migrating {database}")
        subprocess.run([siyu, "db", "upgrade", "--url", url], check=True, env=env, cwd=work,
                       stdout=service_log, stderr=service_log, timeout=120)

        service_port, minimal_port = free_port(), free_port()
        log(f"starting the service on {HOST}:{service_port} and the minimal handler on {HOST}:{minimal_port}")
        service = subprocess.Popen([siyu, "serve", "--config", str(config), "--host", HOST,
                                    "--port", str(service_port), "--log-level", args.log_level],
                                   env=env, cwd=work, stdout=service_log, stderr=service_log)
        minimal = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--minimal-server",
                                    str(minimal_port), "--event-loop", args.event_loop],
                                   stdout=service_log, stderr=service_log)
        if pin:  # servers on CPU 0, load generator on CPU 1
            os.sched_setaffinity(service.pid, {0})
            os.sched_setaffinity(minimal.pid, {0})
        wait_ready(f"http://{HOST}:{service_port}/healthz", service, "the service")
        wait_ready(f"http://{HOST}:{minimal_port}/healthz", minimal, "the minimal handler")

        targets = {"full": f"http://{HOST}:{service_port}", "minimal": f"http://{HOST}:{minimal_port}"}
        pids = {"full": service.pid, "minimal": minimal.pid}
        results: list[dict[str, Any]] = []
        # The closed loop runs in rounds, the two servers taking turns to go first: on a shared
        # machine whose speed drifts over minutes, a ratio of back-to-back phases drifts with it.
        phases = [("closed", round_, server) for round_ in range(1, args.rounds + 1)
                  for server in (("minimal", "full") if round_ % 2 else ("full", "minimal"))]
        phases += [("open", 1, "minimal"), ("open", 1, "full")]
        for seed, (phase, round_, server) in enumerate(phases, start=1):
            what = (f"round {round_} of {args.rounds}, {args.concurrency} connections, {args.duration:g} s"
                    if phase == "closed" else f"{args.rate:g} req/s for {args.duration:g} s")
            log(f"{server}: {phase} loop ({what}, {args.warmup:g} s warm-up)")
            row = load_phase(targets[server], phase, args, seed, 1 if pin else None, pids[server])
            row.update(server=server, phase=phase, round=round_)
            results.append(row)
            log(f"{server}: {phase}: {row['ok']} ok, {row['errors']} errors, {row['rps']} req/s, "
                f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                f"server CPU {row['server_cpu_ms_per_request']} ms/request")
    except (RuntimeError, subprocess.SubprocessError) as error:
        log(f"failed: {error}")
        service_log.close()
        tail = (work / "service.log").read_text(errors="replace")[-3000:]
        print(tail, file=sys.stderr)
        return 1
    finally:
        stop(service)
        stop(minimal)
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


def report(results: list[dict[str, Any]], args: argparse.Namespace, cpus: int, pin: bool) -> None:
    by = {(r["server"], r["phase"]): r for r in results if r["phase"] == "open"}
    print(f"Official Account callback, text message \"{TEXT}\" → passive reply; {CUSTOMERS} customers, "
          f"fresh MsgId per request; 127.0.0.1")
    placement = ("servers pinned to CPU 0, load generator to CPU 1" if pin
                 else "servers and load generator share all of them")
    print(f"machine: {cpus} CPU(s), {placement}; figures are for this machine only")
    print(f"event loop of both servers: {args.event_loop}")
    print(f"closed loop: {args.concurrency} keep-alive connections for {args.duration:g} s per server and round, "
          f"{args.rounds} round(s); open loop: {args.rate:g} req/s for {args.duration:g} s, "
          "latency from the scheduled send time")
    print()
    header = (f"{'server':<8} {'phase':<9} {'requests':>9} {'errors':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU ms/req':>10}")
    print(header)
    print("-" * len(header))
    for r in results:
        phase = f"closed {r['round']}" if r["phase"] == "closed" else r["phase"]
        print(f"{r['server']:<8} {phase:<9} {r['requests']:>9} {r['errors']:>7} {r['rps']:>9.1f} "
              f"{fmt(r['p50_ms']):>8} {fmt(r['p99_ms']):>8} {cpu_text(r['server_cpu_ms_per_request']):>10}")
    for r in results:
        if r["error_kinds"]:
            print(f"  {r['server']} {r['phase']} errors: "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(r["error_kinds"].items())))
    print()
    full_c, min_c, full_o = closed_total(results, "full"), closed_total(results, "minimal"), by[("full", "open")]
    ratio = full_c["rps"] / min_c["rps"] if min_c["rps"] else None
    rounds = {(r["server"], r["round"]): r["rps"] for r in results if r["phase"] == "closed"}
    per_round = [rounds[("full", n)] / rounds[("minimal", n)] for n in range(1, args.rounds + 1)
                 if rounds[("minimal", n)]]
    ratio_met = ratio is not None and ratio >= TARGET_RATIO
    open_met = (full_o["p99_ms"] is not None and full_o["p99_ms"] < TARGET_P99_MS and full_o["errors"] == 0
                and full_o["rps"] >= 0.95 * args.rate)
    ratio_text = "-" if ratio is None else f"{ratio:.1%}"
    print(f"full / minimal throughput (closed loop, all rounds): {ratio_text}  "
          f"target >= {TARGET_RATIO:.0%}: {'met' if ratio_met else 'NOT met'}")
    if args.rounds > 1:
        print("  by round: " + ", ".join(f"{value:.1%}" for value in per_round))
    print(f"full pipeline at {args.rate:g} req/s: p99 {fmt(full_o['p99_ms'])} ms, {full_o['rps']:.1f} req/s, "
          f"{full_o['errors']} errors  target p99 < {TARGET_P99_MS:g} ms: {'met' if open_met else 'NOT met'}")
    full_cpu, min_cpu = full_c["server_cpu_ms_per_request"], min_c["server_cpu_ms_per_request"]
    if full_cpu and min_cpu:
        # The server's own cost, whatever bounds the closed loop (the generator shares the CPUs).
        print(f"server CPU per request (closed loop): full {full_cpu:.3f} ms, minimal {min_cpu:.3f} ms "
              f"({min_cpu / full_cpu:.1%} of the full path's cost)")
    if not pin and cpus <= 2:
        print(f"note: with {cpus} CPU(s) the load generator takes CPU from the server under test; "
              "the minimal handler's closed-loop figure is partly bounded by the generator.")
    if args.json:
        print(json.dumps({"cpus": cpus, "pinned": pin, "event_loop": args.event_loop,
                          "duration_s": args.duration, "rate": args.rate,
                          "concurrency": args.concurrency, "rounds": args.rounds, "results": results,
                          "closed_loop": {"full": full_c, "minimal": min_c},
                          "ratio": None if ratio is None else round(ratio, 4),
                          "ratio_by_round": [round(value, 4) for value in per_round],
                          "targets": {"ratio_ge_50pct": ratio_met, "p99_lt_50ms_at_rate": open_met}},
                         ensure_ascii=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark the Official Account callback: the full service (SQLite, example config) "
                    "against a minimal aiohttp + wechatpy handler, closed loop and open loop.")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase (default 10)")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s (default 500)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="closed-loop rounds, the servers taking turns to go first (default 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop connections (default 32)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each phase (default 2)")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="closed-loop request cap per phase (default 200000)")
    parser.add_argument("--pin", action="store_true",
                        help="pin the servers to CPU 0 and the load generator to CPU 1")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="the service's log level (default WARNING)")
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON object of the figures")
    parser.add_argument("--event-loop", default="uvloop", choices=get_args(EventLoopName),
                        help="the event loop of both servers: the service's [server] event_loop (default uvloop)")
    parser.add_argument("--minimal-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["closed", "open"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 600 or args.rate <= 0 or args.rate > 20_000 \
            or not 1 <= args.concurrency <= 512 or args.warmup < 0 or args.warmup > 60 \
            or not 1 <= args.max_requests <= 10_000_000 or not 1 <= args.rounds <= 20:
        parser.error("bounds: 0 < duration <= 600, 0 < rate <= 20000, 1 <= concurrency <= 512, "
                     "0 <= warmup <= 60, 1 <= max-requests <= 10000000, 1 <= rounds <= 20")

    if args.minimal_server:
        run_minimal_server(args.minimal_server, args.event_loop)
        return 0
    if args.load:
        if not args.target or not args.target.startswith(f"http://{HOST}:"):
            parser.error(f"--target must be http://{HOST}:PORT")
        print(json.dumps(asyncio.run(run_load(args))), flush=True)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
