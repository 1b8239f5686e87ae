"""System events of WeCom Customer Service (`origin` 4 items of `sync_msg`): the welcome on
entering a session, failed sends, recalls, session and servicer changes — each recorded once."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.wecom.api import WecomApiError, WecomUnavailable
from bot.channels.wecom_kf.api import KfApi
from bot.channels.wecom_kf.parse import CHANNEL, sent_at
from bot.channels.wecom_kf.sender import truncate_bytes, wecom_msgid
from bot.clock import Clock
from bot.config.settings import KfWelcome
from storage.privacy import mask
from storage.wecom_kf import Recorded, mark_message, record_customer_event, record_messages

log = logging.getLogger(__name__)

_OUR_MESSAGE = re.compile(r"siyu-m([0-9]{1,18})")
# fail_type of msg_send_fail (WECHAT.md, kf)
FAIL_TYPES = {0: "unknown", 1: "account deleted", 2: "app closed", 4: "session expired (over 48 h)",
              5: "session closed", 6: "over the 5-message limit", 10: "customer rejected"}


def welcome_for(welcomes: Sequence[KfWelcome], scene: str, scene_param: str) -> str | None:
    """The most specific welcome: scene and scene_param, then the scene, then the default."""
    for wanted in ((scene, scene_param), (scene, ""), ("", "")):
        for welcome in welcomes:
            if (welcome.scene, welcome.scene_param) == wanted:
                return welcome.text
    return None


def source_of(scene: str, scene_param: str) -> str | None:
    """The acquisition source of a session: the link's scene, with its parameter."""
    if not scene:
        return None
    return (f"{scene}:{scene_param}" if scene_param else scene)[:128]


class KfEvents:
    def __init__(self, api: KfApi, sessions: async_sessionmaker[AsyncSession], clock: Clock,
                 welcomes: Sequence[KfWelcome]):
        self._api = api
        self._sessions = sessions
        self._clock = clock
        self._welcomes = list(welcomes)

    async def handle(self, item: dict[str, Any], *, answer: bool) -> None:
        event = item.get("event")
        if not isinstance(event, dict):
            return
        kind = str(event.get("event_type") or "unknown")[:32]
        user = event.get("external_userid")
        now = self._clock.now()
        data = {key: value for key, value in event.items() if key != "welcome_code"}
        if not isinstance(user, str) or not user or len(user) > 128:
            log.info("kf event %s for no customer: %s", kind, data)
            return
        # Stored once by its msgid: a pull that sees it again does nothing more.
        fresh = await record_messages(self._sessions, CHANNEL, user, [Recorded(
            f"msg:{item['msgid']}", "in", "event", kind, {"msgtype": "event", "event": data},
            sent_at(item, now))], now, source=self._source(event) if kind == "enter_session" else None)
        if not fresh:
            return
        if kind == "enter_session":
            await self._enter_session(user, event, answer=answer)
        elif kind == "msg_send_fail":
            await self._send_failed(user, event)
        elif kind == "user_recall_msg":
            recalled = str(event.get("recall_msgid") or "")
            await mark_message(self._sessions, CHANNEL, "recalled", {"recalled_at": now.isoformat()},
                               platform_msg_id=f"msg:{recalled}")
        await record_customer_event(self._sessions, CHANNEL, user, f"wecom_kf.{kind}", data, now)

    def _source(self, event: dict[str, Any]) -> str | None:
        return source_of(str(event.get("scene") or ""), str(event.get("scene_param") or ""))

    async def _enter_session(self, user: str, event: dict[str, Any], *, answer: bool) -> None:
        code = event.get("welcome_code")
        if not answer or not isinstance(code, str) or not code:
            return
        text = welcome_for(self._welcomes, str(event.get("scene") or ""), str(event.get("scene_param") or ""))
        if text is None:
            return
        msgid = wecom_msgid(f"welcome-{code}")
        try:
            await self._api.send_msg_on_event(code, msgid, truncate_bytes(text))
        except (WecomApiError, WecomUnavailable) as error:
            log.warning("welcome to %s not sent: %s", mask(user), error)
            return
        now = self._clock.now()
        await record_messages(self._sessions, CHANNEL, user, [Recorded(
            msgid, "out", "text", text, {"source": "welcome", "welcome": True}, now, delivery="push")], now)

    async def _send_failed(self, user: str, event: dict[str, Any]) -> None:
        fail_type = event.get("fail_type")
        reason = FAIL_TYPES.get(fail_type if isinstance(fail_type, int) else -1, f"fail_type {fail_type}")
        found = _OUR_MESSAGE.fullmatch(str(event.get("fail_msgid") or ""))
        if found is None:
            log.info("WeCom reports a failed send to %s that is not ours: %s", mask(user), reason)
            return
        await mark_message(self._sessions, CHANNEL, "failed", {"error": f"WeCom: {reason}"},
                           message_id=int(found.group(1)))
