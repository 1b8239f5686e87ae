"""The bot in a group, for every group channel: store each event, answer only what is addressed
to it, keep personal answers out of the group.

A message is stored by the journal first (with its member's customer, membership and the day's
figures). If it addresses the bot (handlers.groups.Addressing), its words go through the one
pipeline as the member's message, on the member's record (their Official Account customer when
linked by unionid). The answer is posted in the group @-mentioning the asker — unless it carries
the customer's own data (handlers.groups.PersonalAnswers): then it goes to the member privately
through the outbox, and the group gets a short note. A retry (same event id) gets the same answer
and sends nothing again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from bot.app.background import BackgroundTasks
from bot.app.metrics import Metrics
from bot.channels.base import Delivery, Text
from bot.clock import Clock
from bot.groups.journal import GroupJournal, Recorded
from bot.groups.settings import GroupGatewaySettings
from bot.outbox.outbox import Outbox, Push
from bot.pipeline.outcome import Outcome
from bot.pipeline.pipeline import Pipeline
from handlers.groups import Addressed, Addressing, GroupEvent, GroupEventKind, PersonalAnswers
from handlers.messages import Inbound, InboundKind
from storage.groups import GroupArrival, GroupPost, MemberInfo
from storage.privacy import mask

log = logging.getLogger(__name__)

# What a bare "@bot" (nothing else said) is understood as.
BARE_MENTION = "你好"
PRIVATE_RETRY_SECONDS = (2.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class GroupReply:
    """One message to post into the group now."""

    group_id: str
    text: str
    mention: list[str]

    def as_json(self) -> dict[str, object]:
        return {"group_id": self.group_id, "text": self.text, "mention": self.mention}


@dataclass(frozen=True, slots=True)
class GroupAnswer:
    replies: list[GroupReply] = field(default_factory=list)
    private: list[str] = field(default_factory=list)  # what goes to the asker privately
    duplicate: bool = False


class GroupRoom:
    def __init__(self, channel: str, settings: GroupGatewaySettings, personal: PersonalAnswers,
                 journal: GroupJournal, pipeline: Pipeline, outbox: Outbox, tasks: BackgroundTasks,
                 clock: Clock, metrics: Metrics):
        self.channel = channel
        self._settings = settings
        self._addressing = Addressing(settings.bot_names, settings.keywords)
        self._personal = personal
        self._journal = journal
        self._pipeline = pipeline
        self._outbox = outbox
        self._tasks = tasks
        self._clock = clock
        self._metrics = metrics

    @property
    def overloaded(self) -> bool:
        """Whether an event would be refused now (the caller may answer before doing more)."""
        return self._journal.overloaded or self._pipeline.overloaded

    def address(self, event: GroupEvent) -> Addressed | None:
        if event.kind is not GroupEventKind.MESSAGE or event.sender is None:
            return None
        return self._addressing.address(event.text, event.mentioned)

    async def handle(self, event: GroupEvent) -> GroupAnswer:
        """Store the event; answer it if it is addressed to the bot. Raises JournalOverloaded or
        PipelineOverloaded when nothing was stored."""
        self._metrics.inbound.labels(self.channel, f"group_{event.kind}").inc()
        addressed = self.address(event)
        recorded = await self._journal.record(self._arrival(event, addressed))
        if recorded.duplicate:
            self._metrics.duplicates.labels(self.channel).inc()
        if addressed is None or event.sender is None:
            return GroupAnswer(duplicate=recorded.duplicate)
        return await self._answer(event, addressed, recorded)

    def _arrival(self, event: GroupEvent, addressed: Addressed | None) -> GroupArrival:
        people = [event.sender] if event.sender is not None else list(event.members)
        payload = {} if addressed is None else {"addressed_by": str(addressed.by),
                                                **({"keyword": addressed.keyword} if addressed.keyword else {})}
        return GroupArrival(
            channel=self.channel, kind=str(event.kind), event_id=event.id, group_id=event.group.id,
            group_name=event.group.name, members=[MemberInfo(m.id, m.name, m.unionid) for m in people],
            occurred_at=event.sent_at, text=event.text, addressed=addressed is not None, payload=payload)

    async def _answer(self, event: GroupEvent, addressed: Addressed, recorded: Recorded) -> GroupAnswer:
        sender = event.sender
        assert sender is not None
        account = recorded.accounts.get(sender.id)
        linked = None
        if account is not None and (account.channel, account.external_id) != (self.channel, sender.id):
            linked = (account.channel, account.external_id)
        inbound = Inbound(
            channel=self.channel, user_id=sender.id, kind=InboundKind.TEXT, received_at=self._clock.now(),
            dedup_key=f"group:{event.id}", text=addressed.text or BARE_MENTION, unionid=sender.unionid,
            account=linked,
            payload={"group": event.group.id, "group_name": event.group.name, "event_id": event.id,
                     "text": event.text, "addressed_by": str(addressed.by)},
        )
        outcome = await self._pipeline.handle(inbound)
        if not outcome.replies:
            return GroupAnswer(duplicate=outcome.duplicate)
        mention = [sender.id]
        if self._personal.any_in(outcome.replies):
            replies = [GroupReply(event.group.id, self._settings.private_note, mention)]
            private = [reply.text for reply in outcome.replies]
        else:
            replies = [GroupReply(event.group.id, reply.text, mention) for reply in outcome.replies]
            private = []
        if not outcome.duplicate:
            self._after_answer(event, sender.id, replies, private, outcome)
        return GroupAnswer(replies, private, outcome.duplicate)

    def _after_answer(self, event: GroupEvent, member_id: str, replies: list[GroupReply], private: list[str],
                      outcome: Outcome) -> None:
        now = self._clock.now()
        kind = "note" if private else "answer"
        self._journal.post([GroupPost(self.channel, event.group.id, kind, member_id, reply.mention, reply.text,
                                      answered=index == 0, occurred_at=now) for index, reply in enumerate(replies)])
        self._metrics.replies.labels(self.channel, "group").inc(len(replies))
        if private:
            pushes = [Push(message_id, Text(text)) for message_id, text in zip(outcome.message_ids, private,
                                                                                strict=True)]
            self._tasks.spawn(self._deliver_privately(member_id, pushes), name="group private answer")

    async def _deliver_privately(self, member_id: str, pushes: list[Push]) -> None:
        """The answer to the member alone, in order; a passing failure is tried again a few times."""
        for push in pushes:
            for attempt in range(1, self._settings.private_attempts + 1):
                (pushed,) = await self._outbox.deliver(self.channel, member_id, [push])
                self._metrics.replies.labels(self.channel, f"private_{pushed.state}").inc()
                if pushed.outcome is not Delivery.RETRY_LATER or attempt == self._settings.private_attempts:
                    break
                log.info("private answer to %s: %s; trying again", mask(member_id), pushed.reason)
                await asyncio.sleep(PRIVATE_RETRY_SECONDS[min(attempt, len(PRIVATE_RETRY_SECONDS)) - 1])
