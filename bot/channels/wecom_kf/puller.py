"""Pulls an account's messages with `kf/sync_msg`, in the background of a notification.

One puller per kf account across processes (a lease row, storage/wecom_kf.py). Each page's items
are handled in order — customers' messages through the pipeline and their answers through the
outbox, servicers' messages into the transcript, system events to kf events — and only then is
the page's `next_cursor` stored, so a restart resumes after the last stored page: a message is
never skipped, and one seen again is recognised by its msgid and not answered twice.
On the first pull of an account (no cursor stored) the backlog WeCom still holds (up to 3 days)
is stored without being answered: answering days-old messages would surprise their senders.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.base import Text
from bot.channels.wecom.api import WecomApiError, WecomUnavailable
from bot.channels.wecom_kf.api import MSG_TOKEN_INVALID, KfApi
from bot.channels.wecom_kf.events import KfEvents
from bot.channels.wecom_kf.parse import (
    CHANNEL,
    CUSTOMER,
    SERVICER,
    SYSTEM,
    describe,
    item_problem,
    sent_at,
    to_inbound,
)
from bot.clock import Clock
from bot.outbox.outbox import Outbox, Push
from bot.pipeline.pipeline import Pipeline
from storage.privacy import mask
from storage.wecom_kf import (
    Recorded,
    record_messages,
    release_pull,
    remember_account,
    save_cursor,
    take_pull,
    want_pull,
)
from storage.workers import lease_holder

log = logging.getLogger(__name__)

_UNSENT = (None, "passive", "pending")  # a stored answer whose push never finished


class KfPuller:
    def __init__(self, api: KfApi, sessions: async_sessionmaker[AsyncSession], pipeline: Pipeline, outbox: Outbox,
                 events: KfEvents, clock: Clock, *, limit: int = 1000, lease_seconds: int = 60):
        self._api = api
        self._sessions = sessions
        self._pipeline = pipeline
        self._outbox = outbox
        self._events = events
        self._clock = clock
        self._limit = limit
        self._lease = timedelta(seconds=lease_seconds)
        self._accounts: dict[str, str] = {}  # customers whose account is stored, in this process

    async def notified(self, open_kfid: str, sync_token: str | None) -> None:
        """A notification came: record it, then pull unless another puller has the account (it
        sees the notification and pulls again)."""
        await want_pull(self._sessions, open_kfid, sync_token, self._clock.now())
        await self.pull(open_kfid)

    async def pull(self, open_kfid: str) -> None:
        holder = lease_holder()
        while True:
            start = await take_pull(self._sessions, open_kfid, holder, self._clock.now(), self._lease)
            if start is None:
                return
            try:
                await self._drain(open_kfid, holder, start.cursor, start.sync_token)
            except (WecomApiError, WecomUnavailable) as error:
                log.warning("pulling kf account %s stopped: %s; the next notification resumes it", open_kfid, error)
            finally:
                again = await release_pull(self._sessions, open_kfid, holder)
            if not again:
                return

    async def _drain(self, open_kfid: str, holder: str, cursor: str | None, token: str | None) -> None:
        backlog = cursor is None
        if backlog:
            log.info("first pull of kf account %s: storing its backlog without answering it", open_kfid)
        while True:
            try:
                page = await self._api.sync_msg(open_kfid, cursor, token, self._limit)
            except WecomApiError as error:
                if error.errcode != MSG_TOKEN_INVALID or token is None:
                    raise
                token = None  # the notification's token expired: pull without it
                continue
            items = page.get("msg_list") or []
            for item in items if isinstance(items, list) else []:
                await self._handle(item, answer=not backlog)
            cursor = str(page.get("next_cursor") or cursor or "")
            if not await save_cursor(self._sessions, open_kfid, holder, cursor, self._clock.now(), self._lease):
                log.warning("lost the pull lease of kf account %s; the new holder goes on", open_kfid)
                return
            if not int(page.get("has_more") or 0):
                return

    async def _handle(self, item: Any, *, answer: bool) -> None:
        problem = item_problem(item)
        if problem is not None:
            log.warning("skipped a sync_msg item: %s", problem)
            return
        origin = item.get("origin")
        now = self._clock.now()
        if origin == SYSTEM:
            await self._events.handle(item, answer=answer)
            return
        user = str(item["external_userid"])
        await self._remember(user, str(item.get("open_kfid") or ""))
        if origin == SERVICER:
            kind, text = describe(item)
            await record_messages(self._sessions, CHANNEL, user, [Recorded(
                f"msg:{item['msgid']}", "out", kind, text, dict(item), sent_at(item, now), delivery="staff")], now)
            return
        if origin != CUSTOMER:
            log.info("skipped a sync_msg item of origin %r", origin)
            return
        inbound = to_inbound(item, now)
        if not answer:
            kind, text = describe(item)
            await record_messages(self._sessions, CHANNEL, user, [Recorded(
                inbound.dedup_key or "", "in", str(inbound.kind), inbound.text, dict(item), inbound.received_at)], now)
            return
        outcome = await self._pipeline.handle(inbound)
        if outcome.duplicate:
            # Seen before (a pull that stopped after storing it): send what never went out.
            if outcome.delivery not in _UNSENT:
                return
            pushes = [Push(message_id, Text(reply.text))
                      for message_id, reply in zip(outcome.message_ids, outcome.replies, strict=True)]
        else:
            pushes = self._outbox.answer(CHANNEL, outcome, in_time=False).follow_ups
        for pushed in await self._outbox.deliver(CHANNEL, inbound.user_id, pushes):
            if pushed.state != "push":
                log.info("reply to %s not sent: %s", mask(inbound.user_id), pushed.reason)

    async def _remember(self, user: str, open_kfid: str) -> None:
        if not open_kfid or self._accounts.get(user) == open_kfid:
            return
        await remember_account(self._sessions, user, open_kfid, self._clock.now())
        if len(self._accounts) > 100_000:
            self._accounts.clear()
        self._accounts[user] = open_kfid
