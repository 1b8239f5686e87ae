"""The periodic sweepers: APScheduler jobs that claim their work in the database, so every process
may run them, and that stop gracefully: no new runs, running ones get a bounded time to finish."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.base import Sender
from bot.channels.wechat_mp.api import WechatApi
from bot.clock import Clock
from bot.config.settings import Settings
from bot.console.sweeper import sweep_unclaimed
from bot.groups.posts import GroupPosts
from bot.outbox.dispatch import dispatch_due_touches
from bot.outbox.outbox import Outbox
from flows.engine import FlowEngine
from flows.lifecycle import lifecycle_sweep
from flows.points import expire_points
from storage.callback_nonces import forget_expired_nonces
from storage.workers import worker_id

log = logging.getLogger(__name__)

TOKEN_REFRESH_SECONDS = 60  # well inside the refresh margin, so no message waits for a token
UNCLAIMED_SWEEP_SECONDS = 30
FLOW_SWEEP_SECONDS = 30
LIFECYCLE_SWEEP_SECONDS = 600
POINTS_EXPIRY_SECONDS = 3600
NONCE_SWEEP_SECONDS = 60
GROUP_POSTS_SECONDS = 10  # welcomes the process that gathered them did not send (a restart)
WORKER_ID = worker_id()

Job = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class SweeperWork:
    """What the sweepers work on; built by the app once its services exist."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    outbox: Outbox
    senders: Mapping[str, Sender]
    flows: FlowEngine
    wechat_mp: WechatApi | None = None
    notify: Callable[[], Awaitable[None]] | None = None
    group_posts: GroupPosts | None = None


class Sweepers:
    """An AsyncIOScheduler running one instance of each job at a time, and knowing which runs are
    in flight, so that stopping can let them finish instead of cancelling them mid-call."""

    def __init__(self, shutdown_grace_seconds: float):
        self._grace = shutdown_grace_seconds
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._running: set[asyncio.Task[Any]] = set()

    def every(self, seconds: float, name: str, job: Job, *, at_start: bool = False) -> None:
        """Run `job` every `seconds`; `at_start` also runs it as soon as the scheduler starts."""
        first: dict[str, Any] = {"next_run_time": datetime.now(UTC)} if at_start else {}
        self._scheduler.add_job(self._run, "interval", seconds=seconds, args=[name, job], id=name, name=name,
                                max_instances=1, coalesce=True, **first)

    async def _run(self, name: str, job: Job) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await job()
        except Exception:
            log.exception("sweeper %s failed", name)
        finally:
            if task is not None:
                self._running.discard(task)

    def start(self) -> None:
        self._scheduler.start()

    async def stop(self) -> None:
        """Pause (no new runs), wait up to the grace for running jobs, then shut down.

        A job cancelled in the middle of a platform call would leave a message sent but not
        recorded, and sent again after the restart; the grace lets the call and its record finish.
        """
        self._scheduler.pause()
        running = set(self._running)
        pending = running
        if running and self._grace > 0:
            log.info("waiting up to %.0f s for %d running sweeper job(s)", self._grace, len(running))
            _, pending = await asyncio.wait(running, timeout=self._grace)
        self._scheduler.shutdown(wait=False)
        if pending:
            log.warning("%d sweeper job(s) still running after %.0f s: cancelled", len(pending), self._grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def schedule(sweepers: Sweepers, work: SweeperWork) -> None:
    settings = work.settings
    api = work.wechat_mp
    if api is not None:
        async def refresh_token() -> None:
            await api.access_token()

        # At start too: the first push after a restart should not wait for a token either.
        sweepers.every(TOKEN_REFRESH_SECONDS, "refresh_token", refresh_token, at_start=True)

        async def forget_nonces() -> None:
            # Wall time, as the callback's timestamp window is: a pair past it can never be accepted.
            await forget_expired_nonces(work.sessions, datetime.now(UTC))

        sweepers.every(NONCE_SWEEP_SECONDS, "forget_callback_nonces", forget_nonces)
    if settings.staff.enabled:
        async def sweep_unclaimed_chats() -> None:
            # Chats queued past [staff] wait_minutes get one wait message.
            await sweep_unclaimed(work.sessions, work.outbox, settings.staff, work.clock.now(), work.notify)

        sweepers.every(UNCLAIMED_SWEEP_SECONDS, "sweep_unclaimed", sweep_unclaimed_chats)

    async def dispatch_touches() -> None:
        await dispatch_due_touches(work.sessions, work.senders, settings.touches, work.clock, WORKER_ID)

    async def advance_flows() -> None:
        now = work.clock.now()
        await work.flows.run_schedules(now, misfire_grace=settings.sweepers.schedule_misfire_grace)
        await work.flows.advance_due(now)

    async def sweep_lifecycle() -> None:
        await lifecycle_sweep(work.sessions, settings.lifecycle, work.clock.now(), work.flows)

    async def expire() -> None:
        await expire_points(work.sessions, work.clock.now())

    sweepers.every(settings.touches.dispatch_interval_seconds, "dispatch_touches", dispatch_touches)
    # At start too: a scheduled flow start that fell while the service was stopped fires now.
    sweepers.every(FLOW_SWEEP_SECONDS, "advance_flows", advance_flows, at_start=True)
    sweepers.every(LIFECYCLE_SWEEP_SECONDS, "sweep_lifecycle", sweep_lifecycle)
    sweepers.every(POINTS_EXPIRY_SECONDS, "expire_points", expire)
    posts = work.group_posts
    if posts is not None and posts.posters:
        async def send_group_posts() -> None:
            await posts.send_due()

        sweepers.every(GROUP_POSTS_SECONDS, "send_group_posts", send_group_posts)


@asynccontextmanager
async def running_sweepers(work: SweeperWork) -> AsyncIterator[Sweepers]:
    sweepers = Sweepers(work.settings.sweepers.shutdown_grace_seconds)
    schedule(sweepers, work)
    sweepers.start()
    try:
        yield sweepers
    finally:
        await sweepers.stop()
