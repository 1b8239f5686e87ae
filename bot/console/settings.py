"""`[staff]` settings: business hours, escalation triggers, texts, canned replies, login policy."""

from __future__ import annotations

import re
from datetime import time
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.timezones import DEFAULT_TIMEZONE, ZoneName

_CODE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BusinessHours(_Strict):
    """When people answer. Outside these hours customers are told when they will."""

    timezone: ZoneName = DEFAULT_TIMEZONE
    days: list[int] = Field(default=[1, 2, 3, 4, 5, 6, 7], min_length=1)  # ISO weekdays, 1 = Monday
    open: str = "09:00"
    close: str = "21:00"

    @field_validator("days")
    @classmethod
    def _weekdays(cls, days: list[int]) -> list[int]:
        if any(day < 1 or day > 7 for day in days):
            raise ValueError("days are ISO weekdays 1 (Monday) … 7 (Sunday)")
        return sorted(set(days))

    @field_validator("open", "close")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"{value!r} is not a time like 09:00")
        return value

    @model_validator(mode="after")
    def _order(self) -> BusinessHours:
        if self.open_time >= self.close_time:
            raise ValueError("open must be earlier than close")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def open_time(self) -> time:
        return time.fromisoformat(self.open)

    @property
    def close_time(self) -> time:
        return time.fromisoformat(self.close)


class VipRule(_Strict):
    """Which customers are VIPs, and when they go to a person."""

    tags: list[str] = []  # any of these customer tags makes a VIP
    min_points: int = Field(0, ge=0)  # points balance at least this (0 = not used)
    # "not_understood": the first message the bot does not understand goes to a person;
    # "first_message": every new VIP conversation goes to a person at once.
    escalate: str = "not_understood"

    @field_validator("escalate")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in ("not_understood", "first_message"):
            raise ValueError("escalate must be \"not_understood\" or \"first_message\"")
        return value


class CannedReply(_Strict):
    code: str  # short code staff type after "/" in the reply box
    title: str = ""
    text: str = Field(min_length=1)

    @field_validator("code")
    @classmethod
    def _code(cls, code: str) -> str:
        if not _CODE.match(code):
            raise ValueError(f"code {code!r} must be 1–32 letters, digits, '-' or '_'")
        return code


class StaffSettings(_Strict):
    enabled: bool = True
    path: str = "/console/"
    hours: BusinessHours = BusinessHours()
    # Messages a customer sends to ask for a person: contained anywhere / the whole message.
    handoff_keywords: list[str] = ["转人工", "人工客服", "真人客服", "找人工", "人工服务"]
    handoff_exact: list[str] = ["人工", "客服"]
    # Intents (from the intent engine) whose hand-off counts as a complaint in the metrics.
    complaint_intents: list[str] = ["complaint"]
    not_understood_limit: int = Field(3, ge=1, le=50)  # N messages in a row the bot did not understand
    wait_minutes: int = Field(5, ge=1, le=1440)  # T: a queued chat nobody claimed gets a wait message
    vip: VipRule = VipRule()
    # Texts (Simplified Chinese). {hours}: e.g. 周一至周日 09:00–21:00; {next_open}: e.g. 明天 09:00.
    escalated_text: str = "已为您转接人工客服，请稍候，客服会在这里直接回复您。"
    off_hours_text: str = "现在是非工作时间（人工客服 {hours}），您的消息已记录，客服将在 {next_open} 上线后第一时间回复您。"
    wait_text: str = "客服正在忙，您仍在排队中，我们会尽快回复您，感谢耐心等待。"
    off_hours_wait_text: str = "现在是非工作时间，客服将在 {next_open} 上线后回复您。留言我们都会看到。"
    canned_replies: list[CannedReply] = []
    # Login: sessions, cookies and the throttle on wrong passwords.
    # Cookies carry the Secure flag: the console must be served over HTTPS. Set false only to
    # try the console over plain http on your own machine.
    cookie_secure: bool = True
    session_hours: int = Field(12, ge=1, le=720)
    # Wrong passwords allowed from one client address, and for one account name, before each
    # further try has to wait; the wait starts at login_backoff_seconds and doubles per failure …
    max_failed_logins: int = Field(5, ge=1, le=100)
    login_backoff_seconds: float = Field(1.0, gt=0, le=3600)
    # … up to lockout_minutes for an address (failures are remembered that long) and up to
    # account_backoff_max_seconds for a name, so nobody can keep a colleague out for long.
    lockout_minutes: int = Field(15, ge=1, le=1440)
    account_backoff_max_seconds: float = Field(30.0, gt=0, le=3600)

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        return path.rstrip("/") + "/"

    @field_validator("canned_replies")
    @classmethod
    def _unique_codes(cls, replies: list[CannedReply]) -> list[CannedReply]:
        seen: set[str] = set()
        for reply in replies:
            if reply.code.lower() in seen:
                raise ValueError(f"canned reply code {reply.code!r} appears twice")
            seen.add(reply.code.lower())
        return replies
