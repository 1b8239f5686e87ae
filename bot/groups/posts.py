"""What the bot posts into a group later, not in a hook's answer: the join welcome, gathered.

A join starts a welcome due `welcome_gather_seconds` later (storage.groups); joins until then
wait in it. The process that stored the first join sends it when the time is up; the posts
sweeper sends any that are due and unsent (a restart, another process's). A post is claimed with
a conditional UPDATE, so of several processes one sends it; the platform is called with no
transaction open; a passing failure is tried again later, up to `welcome_attempts` in all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app.background import BackgroundTasks
from bot.channels.base import Delivery, DeliveryResult
from bot.clock import Clock
from bot.groups.settings import GroupGatewaySettings
from handlers.router import render
from storage.groups import FAILED, SENT, WELCOME, claim_post, due_posts, finish_post

log = logging.getLogger(__name__)

POST_LEASE_SECONDS = 60.0  # longer than a post's platform call may take
RETRY_SECONDS = (30.0, 120.0, 600.0)
SKIPPED = "skipped"


class GroupPoster(Protocol):
    """A group channel's way into a group."""

    async def post(self, group_id: str, text: str, mention: Sequence[str], *, key: str) -> DeliveryResult:
        """Post one message into the group, @-mentioning `mention`; a result, never an exception."""
        ...


class GroupPosts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock, settings: GroupGatewaySettings,
                 tasks: BackgroundTasks):
        self._sessions = sessions
        self._clock = clock
        self._settings = settings
        self._tasks = tasks
        self._posters: dict[str, GroupPoster] = {}
        self._timers: set[asyncio.TimerHandle] = set()

    def add_poster(self, channel: str, poster: GroupPoster) -> None:
        self._posters[channel] = poster

    @property
    def posters(self) -> Mapping[str, GroupPoster]:
        return self._posters

    def welcome_started(self, channel: str, post_id: int) -> None:
        """A join started a welcome: send it when its gathering time is up (on this process)."""
        if channel not in self._posters:
            return  # another kind of group channel's welcome; the sweeper of its service sends it
        def due() -> None:
            self._timers.discard(timer)
            self._tasks.spawn(self.send(post_id, due_only=False), name="group welcome")

        timer = asyncio.get_running_loop().call_later(self._settings.welcome_gather_seconds, due)
        self._timers.add(timer)

    def close(self) -> None:
        """Stop the gathering timers (their welcomes stay stored; the sweeper sends them later)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def send_due(self) -> int:
        """Send every post that is due; returns how many went out."""
        async with self._sessions() as session:
            ids = await due_posts(session, self._clock.now())
        sent = 0
        for post_id in ids:
            sent += await self.send(post_id)
        return sent

    async def send(self, post_id: int, *, due_only: bool = True) -> bool:
        """Claim one post and send it; whether it went out."""
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            post = await claim_post(session, post_id, now, now + timedelta(seconds=POST_LEASE_SECONDS),
                                    due_only=due_only)
        if post is None:
            return False
        poster = self._posters.get(post.channel)
        text, mention = post.text, post.mention
        if post.kind == WELCOME:
            text = render(self._settings.welcome_for(post.group_id),
                          {"group": post.group_name or "本群", "count": str(len(mention))})
        if post.kind == WELCOME and not mention:
            result = DeliveryResult(Delivery.REFUSED, "every newcomer had left again")
        elif poster is None:
            result = DeliveryResult(Delivery.REFUSED, f"channel {post.channel} cannot post into groups")
        else:
            try:
                result = await poster.post(post.group_id, text, mention, key=f"siyu-p{post.id}")
            except Exception as error:  # noqa: BLE001 - recorded, never lost silently
                result = DeliveryResult(Delivery.RETRY_LATER, f"{type(error).__name__}: {error}")
        retry_at = None
        if result.outcome is Delivery.RETRY_LATER and post.attempts < self._settings.welcome_attempts:
            retry_at = self._clock.now() + timedelta(seconds=RETRY_SECONDS[min(post.attempts, len(RETRY_SECONDS)) - 1])
        state = SENT if result.sent else SKIPPED if post.kind == WELCOME and not mention else FAILED
        async with self._sessions() as session, session.begin():
            await finish_post(session, post.id, state, text=text, mention=mention,
                              reason=None if result.sent else result.record(), retry_at=retry_at)
        if not result.sent:
            log.warning("group post %s to %s not sent%s: %s", post.id, post.group_id,
                        " (tried again later)" if retry_at else "", result.record())
        return result.sent
