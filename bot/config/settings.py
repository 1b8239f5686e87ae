"""Settings: the TOML file loaded once into typed, validated values with line-precise errors.

Secrets may come from the environment: any string value may contain `${NAME}` or
`${NAME:-default}`, which is replaced by the environment variable before validation.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.app.event_loop import EventLoopName
from bot.config.secrets import api_token_problem
from bot.config.toml_lines import index_key_lines, line_of
from bot.console.settings import StaffSettings
from bot.groups.settings import GroupGatewaySettings
from bot.outbox.policy import TouchPolicySettings
from flows.consent import promised_change
from flows.definitions import Flow, flow_problems
from flows.lifecycle_settings import LifecycleSettings, PointsSettings
from handlers.matching import Action
from handlers.nlu.settings import FaqEntry, IntentSpec, NluSettings, check_unique_names

DEFAULT_CONFIG = "config.toml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    event_loop: EventLoopName = "uvloop"


class StorageSettings(Strict):
    url: str = "sqlite+aiosqlite:///siyu.db"
    pool_size: int = Field(10, ge=1, le=200)
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        scheme = url.split("://", 1)[0]
        if scheme not in {"sqlite+aiosqlite", "postgresql+asyncpg", "mysql+aiomysql", "mariadb+aiomysql"}:
            raise ValueError(
                f"unsupported database URL scheme {scheme!r}; use sqlite+aiosqlite://, "
                "postgresql+asyncpg:// or mysql+aiomysql://"
            )
        return url


class ApiSettings(Strict):
    token: str = ""


class WechatMpSettings(Strict):
    enabled: bool = False
    path: str = "/wechat/mp"
    token: str = ""
    app_id: str = ""
    app_secret: str = ""
    encoding_aes_key: str = ""
    api_base_url: str = "https://api.weixin.qq.com"
    reply_deadline_seconds: float = Field(4.5, gt=0, lt=5)
    timestamp_tolerance_seconds: int = Field(300, ge=10)
    max_body_bytes: int = Field(65536, ge=1024)
    token_refresh_margin_seconds: int = Field(600, ge=60, le=3600)

    @field_validator("encoding_aes_key")
    @classmethod
    def _aes_key(cls, key: str) -> str:
        if not key:
            return key
        try:
            raw = base64.b64decode(key + "=", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(key) != 43 or len(raw) != 32:
            raise ValueError("encoding_aes_key must be the 43-character EncodingAESKey from the console")
        return key

    @model_validator(mode="after")
    def _required_when_enabled(self) -> WechatMpSettings:
        if self.enabled:
            missing = [name for name in ("token", "app_id", "app_secret") if not getattr(self, name)]
            if missing:
                raise ValueError(f"channel is enabled but {', '.join(missing)} is empty")
        return self


def _check_aes_key(key: str) -> str:
    if not key:
        return key
    try:
        raw = base64.b64decode(key + "=", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(key) != 43 or len(raw) != 32:
        raise ValueError("encoding_aes_key must be the 43-character EncodingAESKey from the console")
    return key


class KfWelcome(Strict):
    """The welcome an `enter_session` gets: for a `scene` (the 客服链接's scene), and optionally one
    `scene_param` of it; the most specific match wins, an entry with neither is the default."""

    scene: str = ""
    scene_param: str = ""
    text: str = Field(min_length=1, max_length=600)


class WecomKfSettings(Strict):
    """WeCom Customer Service (微信客服): callback, `sync_msg` pulls, `send_msg` replies."""

    enabled: bool = False
    path: str = "/wecom/kf"
    corp_id: str = ""
    secret: str = ""
    token: str = ""
    encoding_aes_key: str = ""
    api_base_url: str = "https://qyapi.weixin.qq.com"
    timestamp_tolerance_seconds: int = Field(300, ge=10)
    max_body_bytes: int = Field(65536, ge=1024)
    token_refresh_margin_seconds: int = Field(600, ge=60, le=3600)
    sync_limit: int = Field(1000, ge=1, le=1000)
    # How long one process holds an account's pull before another may take it over (it renews
    # the lease after each page, so only a process that died lets it run out).
    pull_lease_seconds: int = Field(60, ge=10, le=3600)
    welcome: list[KfWelcome] = []

    @field_validator("encoding_aes_key")
    @classmethod
    def _aes_key(cls, key: str) -> str:
        return _check_aes_key(key)

    @model_validator(mode="after")
    def _required_when_enabled(self) -> WecomKfSettings:
        if self.enabled:
            missing = [name for name in ("corp_id", "secret", "token", "encoding_aes_key") if not getattr(self, name)]
            if missing:
                raise ValueError(f"channel is enabled but {', '.join(missing)} is empty")
        return self


class SimulatorSettings(Strict):
    enabled: bool = True
    path: str = "/simulator/"
    # Off: the simulator answers only requests from this machine, and `siyu serve` refuses to
    # listen beyond loopback with it on. On: it may be reached from anywhere, by logged-in
    # console users only (anyone else could write as any customer and read the replies).
    allow_remote: bool = False


class ChannelsSettings(Strict):
    wechat_mp: WechatMpSettings = WechatMpSettings()
    wecom_kf: WecomKfSettings = WecomKfSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    group_gateway: GroupGatewaySettings = GroupGatewaySettings()


class RuleSettings(Strict):
    """A keyword / exact / regex rule: the operator's most direct control over answers."""

    name: str = Field(min_length=1)
    match: Literal["keyword", "exact", "regex"] = "keyword"
    patterns: list[str] = Field(min_length=1)
    reply: str = Field(min_length=1)
    priority: int = 0

    @field_validator("patterns")
    @classmethod
    def _non_empty(cls, patterns: list[str]) -> list[str]:
        if any(not p.strip() for p in patterns):
            raise ValueError("patterns must not contain empty strings")
        return patterns

    @model_validator(mode="after")
    def _regex_compiles(self) -> RuleSettings:
        if self.match == "regex":
            for pattern in self.patterns:
                try:
                    re.compile(pattern)
                except re.error as error:
                    raise ValueError(f"pattern {pattern!r} is not a valid regex: {error}") from None
        return self


class RepliesSettings(Strict):
    """Default customer-facing texts (Simplified Chinese)."""

    fallback: str = "抱歉，我没太明白您的意思。您可以换个说法，或回复“人工”联系客服。"
    welcome: str = "欢迎关注！有任何问题直接发消息给我就好。"
    media: str = "收到啦！目前我只能看懂文字消息，您可以用文字描述一下吗？"
    welcome_by_source: dict[str, str] = {}


class SweeperSettings(Strict):
    """The periodic sweepers (bot/app/sweepers.py)."""

    # On shutdown, sweeper jobs still running (a touch mid-call to WeChat) get this long to finish
    # and record what they did before they are cancelled. Longer than one platform call's timeout.
    shutdown_grace_seconds: float = Field(20.0, ge=0, le=600)
    # A scheduled flow start missed (the service was stopped at its time) fires once after the
    # restart if it is at most this late; a later one is skipped and logged.
    schedule_misfire_grace_minutes: int = Field(60, ge=0, le=7 * 24 * 60)

    @property
    def schedule_misfire_grace(self) -> timedelta:
        return timedelta(minutes=self.schedule_misfire_grace_minutes)


class Settings(Strict):
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    api: ApiSettings = ApiSettings()
    channels: ChannelsSettings = ChannelsSettings()
    replies: RepliesSettings = RepliesSettings()
    rules: list[RuleSettings] = []
    intents: list[IntentSpec] = []
    faq: list[FaqEntry] = []
    nlu: NluSettings = NluSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    points: PointsSettings = PointsSettings()
    staff: StaffSettings = StaffSettings()
    touches: TouchPolicySettings = TouchPolicySettings()
    sweepers: SweeperSettings = SweeperSettings()
    flows: list[Flow] = []


class ConfigError(Exception):
    """An invalid config: `problems` are ready-to-print `file:line: message` lines."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def resolve_config_path(explicit: str | None) -> Path:
    """--config, else $SIYU_CONFIG, else ./config.toml."""
    return Path(explicit or os.environ.get("SIYU_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: str | Path, environ: dict[str, str] | None = None,
                  warnings: list[str] | None = None) -> Settings:
    """Read, interpolate and validate one config file; raise ConfigError listing every problem.

    `warnings`, when given, receives `file:line: warning: …` lines for what is valid but likely
    wrong (a reply that promises an action its intent does not take)."""
    path = Path(path)
    env = dict(os.environ if environ is None else environ)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found (copy config.example.toml to start)"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: cannot read config: {error}"]) from None
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"line (\d+)", str(error))
        line = found.group(1) if found else "1"
        raise ConfigError([f"{path}:{line}: invalid TOML: {error}"]) from None

    lines = index_key_lines(source)
    problems: list[str] = []
    data = _interpolate(data, (), env, lambda loc, msg: problems.append(_at(path, lines, loc, msg)))
    if "SIYU_DATABASE_URL" in env:
        data.setdefault("storage", {})["url"] = env["SIYU_DATABASE_URL"]
    try:
        settings = Settings.model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            problems.append(_at(path, lines, item["loc"], _message(item)))
        settings = None
    if settings is not None:
        for loc, message in flow_problems(settings.flows, settings.intents):
            problems.append(_at(path, lines, loc, f"'{'.'.join(map(str, loc))}': {message}"))
        for message in check_unique_names(settings.intents, settings.faq):
            problems.append(_at(path, lines, ("intents",), message))
    if problems or settings is None:
        raise ConfigError(problems)
    if warnings is not None:
        warnings.extend(_at(path, lines, loc, f"warning: {message}") for loc, message in _warnings(settings))
    return settings


def _warnings(settings: Settings) -> list[tuple[tuple[str | int, ...], str]]:
    """A token `siyu serve` refuses; replies that tell the customer their consent changed where
    nothing changes it."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    token = api_token_problem(settings.api.token)
    if token is not None:
        found.append((("api", "token"), f"{token}: `siyu serve` refuses to start with it"))
    wanted = {True: Action.OPT_OUT, False: Action.OPT_IN}
    only_replies = 'only replies: use an intent with action = "opt_out" or "opt_in"'
    for index, intent in enumerate(settings.intents):
        promise = promised_change(intent.reply or "")
        if promise is not None and intent.action is not wanted[promise]:
            told = "unsubscribed" if promise else "subscribed again"
            message = (f"intent {intent.name!r} replies that the customer is {told} but its action is "
                       f'{intent.action.value!r}: set action = "{wanted[promise].value}"')
            found.append((("intents", index, "reply"), message))
    for index, rule in enumerate(settings.rules):
        if promised_change(rule.reply) is not None:
            message = f"rule {rule.name!r} replies that the customer's subscription changed, but a rule {only_replies}"
            found.append((("rules", index, "reply"), message))
    for index, entry in enumerate(settings.faq):
        if promised_change(entry.answer) is not None:
            message = (f"faq entry {entry.name!r} answers that the customer's subscription changed, but an "
                       f"FAQ answer {only_replies}")
            found.append((("faq", index, "answer"), message))
    return found


def _message(item: Any) -> str:
    loc = ".".join(str(part) for part in item["loc"])
    kind = item["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{loc}'"
    if kind == "missing":
        return f"missing value for '{loc}'"
    text = str(item["msg"]).removeprefix("Value error, ")
    return f"'{loc}': {text}" if loc else text


def _at(path: Path, lines: dict, loc: Any, message: str) -> str:
    line = line_of(lines, loc) or 1
    return f"{path}:{line}: {message}"


def _interpolate(value: Any, loc: tuple, env: dict[str, str], report: Any) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, k), env, report) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), env, report) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def substitute(found: re.Match[str]) -> str:
            name, default = found.group(1), found.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            report(loc, f"'{'.'.join(map(str, loc))}': environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(substitute, value)
    return value
