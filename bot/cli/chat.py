"""`siyu chat`: the simulator channel in a terminal, on the same pipeline as every channel; with
`--group NAME`, the simulator's group room."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from bot.app.background import BackgroundTasks
from bot.app.metrics import Metrics
from bot.app.services import build_services
from bot.channels.base import DeliveryResult
from bot.channels.simulator.channel import CHANNEL, SimulatorSender
from bot.clock import SystemClock
from bot.config.settings import Settings
from bot.groups.services import build_group_services
from bot.outbox.outbox import Outbox
from handlers.groups import GroupEvent, GroupEventKind, GroupRef, Member
from handlers.messages import EventKind, Inbound, InboundKind
from storage.db import make_engine, make_sessionmaker

PROMPT = "你: "


async def run_chat(settings: Settings, user: str) -> int:
    loop = asyncio.get_running_loop()
    engine = make_engine(settings.storage.url)
    sessions = make_sessionmaker(engine)
    pipeline = (await build_services(settings, sessions, SystemClock())).pipeline
    print(f"Siyu 模拟聊天（用户 {user}）。输入 /follow 模拟关注，/quit 退出。", flush=True)
    try:
        while True:
            line = await loop.run_in_executor(None, _read_line)
            if line is None or line.strip() in ("/quit", "/exit"):
                break
            text = line.strip()
            if not text:
                continue
            now = datetime.now(UTC)
            if text == "/follow":
                inbound = Inbound(channel=CHANNEL, user_id=user, kind=InboundKind.EVENT, received_at=now,
                                  event=EventKind.SUBSCRIBE, payload={"event": "subscribe"})
            else:
                inbound = Inbound(channel=CHANNEL, user_id=user, kind=InboundKind.TEXT, received_at=now,
                                  text=text, payload={"text": text})
            outcome = await pipeline.handle(inbound)
            for reply in outcome.replies:
                print(f"机器人: {reply.text}", flush=True)
    finally:
        await pipeline.close()
        await engine.dispose()
    return 0


def _read_line() -> str | None:
    try:
        return input(PROMPT) if sys.stdin.isatty() else (sys.stdin.readline() or None)
    except EOFError:
        return None


GROUP_HELP = ("命令：/as 名字 以该成员身份发言，/join 名字 … 让成员入群，/leave 名字 … 退群，/quit 退出。"
              "@机器人名字 开头，或说到关键词，机器人才回答。")


class _TerminalPoster:
    """Posts into the simulated group: printed (the join welcome, when its time is up)."""

    async def post(self, group_id: str, text: str, mention: Sequence[str], *, key: str) -> DeliveryResult:
        print(f"群 {group_id} · 机器人: {_mentions(mention)}{text}", flush=True)
        return DeliveryResult.delivered(key)


def _mentions(names: Sequence[str]) -> str:
    return "".join(f"@{name} " for name in names)


async def run_group_chat(settings: Settings, group: str, user: str) -> int:
    """`siyu chat --group NAME`: the simulator's group room in a terminal, on the same pipeline,
    journal and outbox as the service."""
    loop = asyncio.get_running_loop()
    clock = SystemClock()
    engine = make_engine(settings.storage.url)
    sessions = make_sessionmaker(engine)
    services = await build_services(settings, sessions, clock)
    tasks = BackgroundTasks()
    outbox = Outbox(sessions, {CHANNEL: SimulatorSender()}, clock)
    groups = build_group_services(settings, sessions, clock, services.flows, tasks, Metrics())
    groups.posts.add_poster(CHANNEL, _TerminalPoster())
    room = groups.room(CHANNEL, services.pipeline, outbox)
    speaker = user
    print(f"Siyu 群聊模拟（群 {group}，你是 {speaker}）。{GROUP_HELP}", flush=True)
    try:
        while True:
            line = await loop.run_in_executor(None, _read_line)
            if line is None or line.strip() in ("/quit", "/exit"):
                break
            text = line.strip()
            if not text:
                continue
            command, _, rest = text.partition(" ")
            names = [name for name in rest.replace("，", " ").replace(",", " ").split() if name]
            now = datetime.now(UTC)
            ref = GroupRef(group, group)
            if command == "/as" and names:
                speaker = names[0]
                print(f"（现在以 {speaker} 的身份发言）", flush=True)
                continue
            if command in ("/join", "/leave") and names:
                kind = GroupEventKind.JOIN if command == "/join" else GroupEventKind.LEAVE
                event = GroupEvent(f"cli-{uuid.uuid4().hex}", kind, ref, now,
                                   members=tuple(Member(name, name) for name in names))
                await room.handle(event)
                print(f"（{'、'.join(names)} {'加入了' if kind is GroupEventKind.JOIN else '退出了'}群聊）", flush=True)
                continue
            if command.startswith("/"):
                print(GROUP_HELP, flush=True)
                continue
            event = GroupEvent(f"cli-{uuid.uuid4().hex}", GroupEventKind.MESSAGE, ref, now,
                               sender=Member(speaker, speaker), text=text)
            answer = await room.handle(event)
            for reply in answer.replies:
                print(f"群 {group} · 机器人: {_mentions(reply.mention)}{reply.text}", flush=True)
            for private in answer.private:
                print(f"私信 → {speaker} · 机器人: {private}", flush=True)
    finally:
        groups.posts.close()
        await tasks.drain()
        await groups.close()
        await services.pipeline.close()
        await engine.dispose()
    return 0
