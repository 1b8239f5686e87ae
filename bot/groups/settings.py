"""`[channels.group_gateway]`: the signed webhook of a group gateway, and how the bot behaves in
groups (who addresses it, the join welcome, the note that points to a private answer).

The behaviour keys also drive the simulator's group room, so a config can be tried there before
any gateway is connected.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class GroupGatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    path: str = "/group/hook"
    # HMAC-SHA256 key shared with the gateway: it signs its events, and Siyu signs what it sends.
    secret: str = ""
    # Where Siyu POSTs messages that go later or privately (private answers, touches, staff replies,
    # welcomes).
    send_url: str = ""
    # The bot's names in groups: "@<name>" at the start of a message addresses the bot when the
    # gateway does not say (`mentioned` omitted); every "@<name>" is taken out before matching.
    bot_names: list[str] = ["思语"]
    # A message containing one of these is answered without an @-mention.
    keywords: list[str] = []
    timestamp_tolerance_seconds: int = Field(300, ge=10, le=3600)
    max_body_bytes: int = Field(65536, ge=1024, le=1024 * 1024)
    send_timeout_seconds: float = Field(10.0, gt=0, le=60)
    # A private answer whose delivery fails for a passing reason is tried this many times.
    private_attempts: int = Field(3, ge=1, le=10)
    # The group's note when the answer carries the customer's own data and went privately.
    private_note: str = "已私信您，请查看私聊消息～"
    # Joins within this many seconds of the first are welcomed together, in one message.
    welcome_gather_seconds: float = Field(5.0, ge=0, le=600)
    # The welcome: {group} is the group's name, {count} how many joined. Empty: no welcome.
    welcome: str = "欢迎新朋友加入{group}！有任何问题 @我 就好～"
    welcome_by_group: dict[str, str] = {}  # group id → its own welcome
    # A welcome the gateway refused for a passing reason is tried again this many times in all.
    welcome_attempts: int = Field(3, ge=1, le=10)

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        return path

    @field_validator("bot_names", "keywords")
    @classmethod
    def _words(cls, words: list[str]) -> list[str]:
        cleaned = [word.strip().lstrip("@") for word in words]
        if any(not word for word in cleaned):
            raise ValueError("names and keywords must not be empty")
        return cleaned

    @field_validator("send_url")
    @classmethod
    def _url(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("send_url must be an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _required_when_enabled(self) -> GroupGatewaySettings:
        if self.enabled:
            missing = [name for name in ("secret", "send_url") if not getattr(self, name)]
            if missing:
                raise ValueError(f"channel is enabled but {', '.join(missing)} is empty")
            if len(self.secret) < 16:
                raise ValueError("secret must be at least 16 characters (a random string shared with the gateway)")
        return self

    def welcome_for(self, group_id: str) -> str:
        return self.welcome_by_group.get(group_id, self.welcome)
