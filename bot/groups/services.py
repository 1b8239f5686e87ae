"""The group machinery one app (or `siyu chat --group`) shares across its group channels: the
journal, the posts, and which answers are personal; each channel gets its room from here."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app.background import BackgroundTasks
from bot.app.metrics import Metrics
from bot.clock import Clock
from bot.config.settings import Settings
from bot.groups.journal import GroupJournal
from bot.groups.posts import GroupPosts
from bot.groups.room import GroupRoom
from bot.groups.settings import GroupGatewaySettings
from bot.outbox.outbox import Outbox
from bot.pipeline.pipeline import Pipeline
from flows.reactions import Reactions
from handlers.groups import PersonalAnswers


def personal_answers(settings: Settings) -> PersonalAnswers:
    """Intents and flows marked personal (a flow also when it asks or shows the customer's own
    data), and intents that start a personal flow."""
    flows = {flow.name for flow in settings.flows if flow.is_personal}
    intents = [intent.name for intent in settings.intents if intent.personal or intent.flow in flows]
    return PersonalAnswers(intents, flows)


@dataclass
class GroupServices:
    settings: GroupGatewaySettings
    journal: GroupJournal
    posts: GroupPosts
    personal: PersonalAnswers
    tasks: BackgroundTasks
    clock: Clock
    metrics: Metrics

    def room(self, channel: str, pipeline: Pipeline, outbox: Outbox) -> GroupRoom:
        return GroupRoom(channel, self.settings, self.personal, self.journal, pipeline, outbox, self.tasks,
                         self.clock, self.metrics)

    async def close(self) -> None:
        """Stop the welcome timers and let the journal store what it was handed."""
        self.posts.close()
        await self.journal.close()


def build_group_services(settings: Settings, sessions: async_sessionmaker[AsyncSession], clock: Clock,
                         reactions: Reactions, tasks: BackgroundTasks, metrics: Metrics) -> GroupServices:
    behaviour = settings.channels.group_gateway
    welcome = behaviour.welcome_gather_seconds if behaviour.welcome.strip() else None
    journal = GroupJournal(sessions, clock, ZoneInfo(settings.touches.default_timezone), settings.lifecycle,
                           reactions, welcome_gather_seconds=welcome)
    posts = GroupPosts(sessions, clock, behaviour, tasks)
    journal.on_welcome(posts.welcome_started)
    return GroupServices(behaviour, journal, posts, personal_answers(settings), tasks, clock, metrics)
