"""Group gateway benchmark: a flash-sale burst in busy customer groups, beside the Official
Account callback at the same rate, in one run.

One run starts, on 127.0.0.1 (the service, its fake WeChat API, its database and the way they
are measured are bench/webhook.py's, imported from there):
  * the real service, `siyu serve`, with the example config, wechat_mp and the group gateway
    enabled, a fake WeChat API and a fake gateway `send_url` (--fake-gateway mode, accepting
    everything), on a freshly migrated database (a SQLite file, or --url, emptied);
  * --groups groups of --members members each, joined through POST /group/hook before anything
    is measured (one join event per group; their welcomes go to the fake gateway);
then, from separate load-generator processes:
  * the burst: signed `message` events at --rate per second for --duration s (open loop:
    latency from each event's scheduled send time), from random members of random groups; a
    share --mention-share of them @-mentions the bot ("@思语 几点开门", every fifth "@思语 查积分",
    whose answer goes privately through send_url), the rest is chatter nobody answers;
  * the Official Account callback (bench/webhook.py's load) at the same rate for the same time.
Afterwards it counts what the database holds: every message event accepted must be stored once.

It prints, per phase, requests, errors, p50/p99/max, and the service's CPU time per request, the
@-answers' figures on their own, and whether the targets are met: every event stored, 0 errors,
p99 of the @-answers < 100 ms. Figures, not assertions: the exit status is 0 whenever the run
completes. Progress goes to stderr; with --json the last stdout line is one JSON object.

    .venv/bin/python bench/groups.py                       # 20 groups × 500, 300 events/s for 30 s
    .venv/bin/python bench/groups.py --duration 5 --groups 4 --members 100    # a short check
    .venv/bin/python bench/groups.py --url postgresql+asyncpg://root@127.0.0.1:5432/siyu_bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import webhook

from bot.channels.group_gateway.signing import signed_headers

HOST = webhook.HOST
SECRET = "siyu-bench-group-gateway-secret"
HOOK = "/group/hook"
MENTION, PERSONAL, CHATTER = "@思语 几点开门", "@思语 查积分", ("今天几点开抢", "有人抢到了吗", "链接在哪", "好便宜啊",
                                                          "还有货吗", "冲冲冲", "我也要", "群主发个券吧")
EXPECTED = "10:00"  # in the business_hours rule's reply
TARGET_P99_MS = 100.0
MEASURING = webhook.MEASURING
REQUEST_TIMEOUT = webhook.REQUEST_TIMEOUT


def log(text: str) -> None:
    print(f"[bench groups] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the fake gateway

def run_fake_gateway(port: int) -> None:
    """The gateway's send_url: takes every message (welcomes, private answers)."""
    from aiohttp import web

    async def send(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/send", send)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


# ---------------------------------------------------------------- the load

class GroupLoad:
    def __init__(self, target: str, groups: int, members: int, mention_share: float, seed: int):
        self.url = target + HOOK
        self._groups, self._members, self._share = groups, members, mention_share
        self._rng = random.Random(seed)
        self._prefix = f"bench-{seed}-{int(time.time())}"
        self._n = 0

    def event(self) -> tuple[bytes, bool]:
        """One signed-to-be message event; whether it @-mentions the bot."""
        self._n += 1
        group = self._rng.randrange(self._groups)
        member = f"m-{group:02d}-{self._rng.randrange(self._members):04d}"
        mention = self._rng.random() < self._share
        text = (PERSONAL if self._n % 5 == 0 else MENTION) if mention else self._rng.choice(CHATTER)
        event = {"id": f"{self._prefix}-{self._n}", "type": "message",
                 "group": {"id": f"g-{group:02d}", "name": f"秒杀群 {group + 1}"},
                 "sender": {"id": member, "name": f"会员{member[-4:]}"}, "text": text,
                 "sent_at": "2026-12-12T20:00:00+08:00"}
        return json.dumps(event, ensure_ascii=False).encode(), mention


class GroupRecorder:
    def __init__(self) -> None:
        self.mentions: list[float] = []
        self.silent: list[float] = []
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _send(session: Any, url: str, body: bytes, mention: bool, recorder: GroupRecorder, started: float) -> None:
    import aiohttp

    try:
        async with session.post(url, data=body, headers=signed_headers(SECRET, body)) as response:
            status = response.status
            answer = await response.json() if status == 200 else None
    except TimeoutError:
        recorder.error("timeout")
        return
    except aiohttp.ClientError as error:
        recorder.error(type(error).__name__)
        return
    if status != 200 or answer is None:
        recorder.error(f"HTTP {status}")
        return
    replies = answer.get("replies", [])
    if mention and not replies:
        recorder.error("mention unanswered")
    elif not mention and replies:
        recorder.error("chatter answered")
    elif mention and PERSONAL not in body.decode() and EXPECTED not in replies[0].get("text", ""):
        recorder.error("wrong answer")
    else:
        (recorder.mentions if mention else recorder.silent).append(time.perf_counter() - started)


async def run_group_load(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    load = GroupLoad(args.target, args.groups, args.members, args.mention_share, args.seed)
    recorder = GroupRecorder()
    connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) \
            as session:
        warm = GroupRecorder()
        for _ in range(int(args.warmup * 20)):  # a few events to warm the path, unmeasured
            body, mention = load.event()
            await _send(session, load.url, body, mention, warm, time.perf_counter())
        print(MEASURING, flush=True)
        total = max(1, int(args.rate * args.duration))
        tasks: set[asyncio.Task[None]] = set()
        begin = time.perf_counter()
        for i in range(total):
            scheduled = begin + i / args.rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body, mention = load.event()
            task = asyncio.create_task(_send(session, load.url, body, mention, recorder, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 1)
        for task in list(tasks):
            task.cancel()
            recorder.error("unfinished")
        elapsed = time.perf_counter() - begin
    everything = webhook.Recorder()
    everything.latencies = recorder.mentions + recorder.silent
    everything.errors = recorder.errors
    mentions = webhook.Recorder()
    mentions.latencies = recorder.mentions
    return {**webhook.summarise(everything, elapsed), "sent": total, "warmup_events": int(args.warmup * 20),
            "mentions": webhook.summarise(mentions, elapsed)}


async def join_everyone(target: str, groups: int, members: int) -> None:
    """Each group's members, one join event per group, before anything is measured."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        for group in range(groups):
            event = {"id": f"bench-join-{group}-{int(time.time())}", "type": "join",
                     "group": {"id": f"g-{group:02d}", "name": f"秒杀群 {group + 1}"},
                     "members": [{"id": f"m-{group:02d}-{n:04d}", "name": f"会员{n:04d}"} for n in range(members)]}
            body = json.dumps(event, ensure_ascii=False).encode()
            async with session.post(target + HOOK, data=body, headers=signed_headers(SECRET, body)) as response:
                if response.status != 200:
                    raise RuntimeError(f"joining group {group} failed: HTTP {response.status} {await response.text()}")


async def stored_messages(url: str) -> dict[str, int]:
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from storage.group_models import GroupEntry

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(GroupEntry.kind, GroupEntry.addressed, func.count())
                                            .where(GroupEntry.direction == "in").group_by(GroupEntry.kind,
                                                                                          GroupEntry.addressed))
            counts = {f"{kind}{' addressed' if addressed else ''}": int(n) for kind, addressed, n in rows}
    finally:
        await engine.dispose()
    return counts


# ---------------------------------------------------------------- the orchestrator

def write_config(directory: Path, url: str, api_port: int, event_loop: str) -> Path:
    """bench/webhook.py's config, with the group gateway enabled too (its secret and send_url come
    from the environment, as the example config reads them)."""
    path = webhook.write_config(directory, url, api_port, event_loop)
    text = path.read_text(encoding="utf-8")
    head, marker, tail = text.partition("[channels.group_gateway]")
    tail, enabled = re.subn(r"(?m)^enabled\s*=\s*false", "enabled = true", tail, count=1)
    if not marker or enabled != 1:
        raise SystemExit("config.example.toml changed shape: cannot enable [channels.group_gateway]")
    path.write_text(head + marker + tail, encoding="utf-8")
    return path


def group_phase(target: str, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--group-load", "--target", target,
               "--rate", str(args.rate), "--duration", str(args.duration), "--groups", str(args.groups),
               "--members", str(args.members), "--mention-share", str(args.mention_share),
               "--warmup", str(args.warmup), "--seed", str(args.seed)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    bound = args.warmup * 20 + args.duration + 3 * REQUEST_TIMEOUT + 60
    watchdog = threading.Timer(bound, process.kill)
    watchdog.start()
    cpu_start = cpu_end = None
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == MEASURING:
                cpu_start = webhook.cpu_seconds(server_pid)
            else:
                lines.append(line)
        cpu_end = webhook.cpu_seconds(server_pid)
        process.wait()
    finally:
        watchdog.cancel()
    if process.returncode != 0:
        raise RuntimeError(f"group load generator failed with status {process.returncode}")
    row: dict[str, Any] = json.loads(lines[-1])
    used = None if cpu_start is None or cpu_end is None else cpu_end - cpu_start
    row["server_cpu_ms_per_request"] = round(used / row["ok"] * 1000, 3) if used is not None and row["ok"] else None
    return row


def orchestrate(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="siyu-bench-groups-"))
    processes: list[subprocess.Popen[Any]] = []
    service_log_path = Path(args.service_log) if args.service_log else work / "service.log"
    service_log = service_log_path.open("wb")
    try:
        url = args.url or f"sqlite+aiosqlite:///{work / 'siyu.db'}"
        api_port, gateway_port, service_port = webhook.free_port(), webhook.free_port(), webhook.free_port()
        env = {**os.environ, "WECHAT_MP_TOKEN": webhook.TOKEN, "WECHAT_APP_ID": webhook.APP_ID,
               "WECHAT_APP_SECRET": webhook.APP_SECRET, "WECHAT_ENCODING_AES_KEY": "", "SIYU_DATABASE_URL": url,
               "SIYU_API_TOKEN": webhook.API_TOKEN, "GROUP_GATEWAY_SECRET": SECRET,
               "GROUP_GATEWAY_SEND_URL": f"http://{HOST}:{gateway_port}/send"}
        if args.url:
            log(f"emptying {webhook.redact(url)}")
            asyncio.run(webhook.empty_database(url))
        log(f"migrating {webhook.redact(url)}")
        subprocess.run([str(Path(sys.executable).parent / "siyu"), "db", "upgrade", "--url", url], check=True,
                       env=env, cwd=work, stdout=service_log, stderr=service_log, timeout=300)
        helper = [sys.executable, str(Path(__file__).resolve())]
        fake_api = subprocess.Popen([sys.executable, str(Path(webhook.__file__).resolve()), "--fake-api",
                                     str(api_port), "--token-delay", "0"], stdout=service_log, stderr=service_log)
        fake_gateway = subprocess.Popen([*helper, "--fake-gateway", str(gateway_port)], stdout=service_log,
                                        stderr=service_log)
        processes += [fake_api, fake_gateway]
        webhook.wait_ready(f"http://{HOST}:{api_port}/healthz", fake_api, "the fake WeChat API")
        webhook.wait_ready(f"http://{HOST}:{gateway_port}/healthz", fake_gateway, "the fake gateway")
        config = write_config(work, url, api_port, args.event_loop)
        figures = work / "figures.json"
        log(f"starting the service on {HOST}:{service_port}")
        service = subprocess.Popen([sys.executable, str(Path(webhook.__file__).resolve()), "--service", str(config),
                                    "--port", str(service_port), "--figures", str(figures),
                                    "--log-level", args.log_level],
                                   env=env, cwd=work, stdout=service_log, stderr=service_log)
        processes.append(service)
        target = f"http://{HOST}:{service_port}"
        webhook.wait_ready(target + "/healthz", service, "the service", timeout=120)
        started = time.monotonic()
        asyncio.run(join_everyone(target, args.groups, args.members))
        log(f"{args.groups} groups of {args.members} members joined in {time.monotonic() - started:.1f} s")
        time.sleep(1.0)  # let their welcomes go out before anything is measured
        log(f"group burst: {args.rate:g} events/s for {args.duration:g} s, {args.mention_share:.0%} @-mentions")
        burst = group_phase(target, args, service.pid)
        log(f"group burst: {burst['ok']} ok, {burst['errors']} errors, p99 {burst['p99_ms']} ms, "
            f"@-answers p99 {burst['mentions']['p99_ms']} ms")
        stored = asyncio.run(stored_messages(url))
        log(f"Official Account callback: {args.rate:g} requests/s for {args.duration:g} s")
        mp_args = argparse.Namespace(rate=args.rate, duration=args.duration, concurrency=32, max_requests=200_000,
                                     warmup=args.warmup)
        callback = webhook.load_phase(target, "open", mp_args, args.seed + 1, None, service.pid, args.duration)
        callback.pop("window", None)
        log(f"Official Account callback: {callback['ok']} ok, {callback['errors']} errors, "
            f"p99 {callback['p99_ms']} ms")
    except (RuntimeError, subprocess.SubprocessError) as error:
        log(f"failed: {error}")
        service_log.close()
        print(service_log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
        return 1
    finally:
        for process in reversed(processes):
            webhook.stop(process)
        service_log.close()
        shutil.rmtree(work, ignore_errors=True)
    report(args, burst, callback, stored)
    return 0


def report(args: argparse.Namespace, burst: dict[str, Any], callback: dict[str, Any], stored: dict[str, int]) -> None:
    fmt, cpu = webhook.fmt, webhook.cpu_text
    cpus = os.cpu_count() or 1
    messages_stored = stored.get("message", 0) + stored.get("message addressed", 0)
    expected = burst["sent"] + burst["warmup_events"] - sum(
        n for kind, n in burst["error_kinds"].items() if kind in ("timeout", "unfinished") or kind.startswith("HTTP"))
    print(f"Group gateway burst beside the Official Account callback; {cpus} CPU(s), 127.0.0.1; "
          f"database: {webhook.database_name(args.url)}; event loop: {args.event_loop}")
    print(f"{args.groups} groups × {args.members} members; {args.rate:g} events/s for {args.duration:g} s, "
          f"{args.mention_share:.0%} @-mentioning the bot (every fifth of those a personal question answered "
          "privately); latency from each event's scheduled send time")
    print()
    header = f"{'phase':<28} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} " \
             f"{'CPU ms/req':>10}"
    print(header)
    print("-" * len(header))
    for name, row, cpu_ms in (("group events, all", burst, burst["server_cpu_ms_per_request"]),
                              ("  of them @-answers", burst["mentions"], None),
                              ("Official Account callback", callback, callback["server_cpu_ms_per_request"])):
        print(f"{name:<28} {row['requests']:>9} {row['errors']:>7} {row['rps']:>8.1f} {fmt(row['p50_ms']):>8} "
              f"{fmt(row['p99_ms']):>8} {fmt(row['max_ms']):>8} {cpu(cpu_ms):>10}")
    for name, row in (("group", burst), ("callback", callback)):
        if row["error_kinds"]:
            print(f"  {name} errors: " + ", ".join(f"{k}: {v}" for k, v in sorted(row["error_kinds"].items())))
    print()
    p99 = burst["mentions"]["p99_ms"]
    all_stored = messages_stored == expected
    met = all_stored and burst["errors"] == 0 and p99 is not None and p99 < TARGET_P99_MS
    print(f"stored message events: {messages_stored} of {expected} accepted "
          f"({stored.get('message addressed', 0)} addressed to the bot)")
    print(f"targets: every event stored, 0 errors, @-answers p99 < {TARGET_P99_MS:g} ms: {'met' if met else 'NOT met'}"
          f" (stored {'all' if all_stored else 'NOT all'}, {burst['errors']} errors, p99 {fmt(p99)} ms)")
    if args.json:
        print(json.dumps({"cpus": cpus, "database": webhook.database_name(args.url), "groups": args.groups,
                          "members": args.members, "rate": args.rate, "duration_s": args.duration,
                          "burst": burst, "callback": callback, "stored": stored, "targets_met": met},
                         ensure_ascii=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark the group gateway with a flash-sale burst in busy groups, beside the Official "
                    "Account callback at the same rate.")
    parser.add_argument("--url", help="the service's database: a postgresql+asyncpg:// or mysql+aiomysql:// URL "
                                      "on 127.0.0.1, EMPTIED and migrated by the bench (default: a fresh SQLite file)")
    parser.add_argument("--groups", type=int, default=20, help="groups (default 20)")
    parser.add_argument("--members", type=int, default=500, help="members per group (default 500)")
    parser.add_argument("--rate", type=float, default=300.0, help="events per second (default 300)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of each phase (default 30)")
    parser.add_argument("--mention-share", type=float, default=0.05,
                        help="share of events @-mentioning the bot (default 0.05)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="warm-up: this × 20 unmeasured events first, and the callback's warm-up seconds "
                             "(default 2)")
    parser.add_argument("--event-loop", default="uvloop", choices=["uvloop", "asyncio"],
                        help="the service's [server] event_loop (default uvloop)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--service-log", metavar="FILE", help="keep the service's log in FILE")
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON object of the figures")
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--fake-gateway", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--group-load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (1 <= args.groups <= 200 and 1 <= args.members <= 5000 and 0 < args.rate <= 5000
            and 0 < args.duration <= 600 and 0 <= args.mention_share <= 1 and 0 <= args.warmup <= 60):
        parser.error("bounds: 1 <= groups <= 200, 1 <= members <= 5000, 0 < rate <= 5000, 0 < duration <= 600, "
                     "0 <= mention-share <= 1, 0 <= warmup <= 60")
    if args.url:
        parts = urlsplit(args.url)
        if parts.scheme not in ("postgresql+asyncpg", "mysql+aiomysql") or parts.hostname not in (HOST, "localhost"):
            parser.error(f"--url must be a postgresql+asyncpg:// or mysql+aiomysql:// URL on {HOST}")
    if args.fake_gateway:
        run_fake_gateway(args.fake_gateway)
        return 0
    if args.group_load:
        if not args.target or not args.target.startswith(f"http://{HOST}:"):
            parser.error(f"--target must be http://{HOST}:PORT")
        print(json.dumps(asyncio.run(run_group_load(args))), flush=True)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
