"""Typed keys for the objects the aiohttp application shares."""

from __future__ import annotations

from aiohttp import ClientSession, web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app.background import BackgroundTasks
from bot.app.metrics import Metrics
from bot.clock import Clock
from bot.config.settings import Settings
from bot.groups.services import GroupServices
from bot.outbox.outbox import Outbox
from bot.pipeline.pipeline import Pipeline

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
METRICS = web.AppKey("metrics", Metrics)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
HTTP = web.AppKey("http", ClientSession)
TASKS = web.AppKey("tasks", BackgroundTasks)
PIPELINE = web.AppKey("pipeline", Pipeline)
OUTBOX = web.AppKey("outbox", Outbox)
GROUPS = web.AppKey("groups", GroupServices)
