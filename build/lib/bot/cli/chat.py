"""`siyu chat`: the simulator channel in a terminal, on the same pipeline as every channel."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from bot.app.services import build_services
from bot.channels.simulator.channel import CHANNEL
from bot.clock import SystemClock
from bot.config.settings import Settings
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
