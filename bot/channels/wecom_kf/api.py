"""The WeCom Customer Service endpoints Siyu calls, and their error codes (WECHAT.md, kf)."""

from __future__ import annotations

from typing import Any

from bot.channels.wecom.api import WecomApi

SYNC_MSG_PATH = "/cgi-bin/kf/sync_msg"
SEND_MSG_PATH = "/cgi-bin/kf/send_msg"
SEND_ON_EVENT_PATH = "/cgi-bin/kf/send_msg_on_event"
SESSION_STATE_INVALID = 95018  # the session is not in state 0/1 (a servicer holds it, or it ended)
INVALID_OPEN_KFID = 95000
SEND_LIMIT = 95001  # the 5-message limit of the 48-hour window is used up
SERVICER_INACTIVE = 95014
WINDOW_EXPIRED = 95016  # no message from the customer within 48 hours (session not allowed)
MSG_TOKEN_INVALID = 95007  # the notification's token expired (valid 10 minutes)


class KfApi:
    def __init__(self, api: WecomApi):
        self.wecom = api

    async def sync_msg(self, open_kfid: str, cursor: str | None, token: str | None, limit: int) -> dict[str, Any]:
        # wechatpy's kf.sync_msg lacks the required open_kfid: the endpoint is called directly.
        payload: dict[str, Any] = {"open_kfid": open_kfid, "limit": limit}
        if cursor:
            payload["cursor"] = cursor
        if token:
            payload["token"] = token
        return await self.wecom.call(SYNC_MSG_PATH, payload)

    async def send_msg(self, touser: str, open_kfid: str, msgid: str, msgtype: str,
                       content: dict[str, Any]) -> dict[str, Any]:
        return await self.wecom.call(SEND_MSG_PATH, {"touser": touser, "open_kfid": open_kfid, "msgid": msgid,
                                                     "msgtype": msgtype, msgtype: content})

    async def send_msg_on_event(self, code: str, msgid: str, text: str) -> dict[str, Any]:
        return await self.wecom.call(SEND_ON_EVENT_PATH, {"code": code, "msgid": msgid, "msgtype": "text",
                                                          "text": {"content": text}})
