"""Secrets in the config that must be real before the service listens: no placeholder or short
token opens the events API, and no example value signs WeChat callbacks.

An empty API token keeps the API off; `siyu serve` refuses any other value that is not a secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config.settings import Settings

MIN_API_TOKEN = 32
MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
# Values people leave in example files; compared folded (case, "-", "_" and spaces removed).
PLACEHOLDERS = frozenset({
    "changeme", "changethis", "changeit", "replaceme", "secret", "password", "passw0rd", "token", "apitoken",
    "yourtoken", "yoursecret", "yourapitoken", "example", "test", "testtoken", "default", "todo", "fixme",
    "admin", "siyu", "xxx", "xxxx", "xxxxxx", "123456", "12345678", "none", "null",
})


def _folded(value: str) -> str:
    return "".join(ch for ch in value.lower() if ch not in "-_ .")


def is_placeholder(value: str) -> bool:
    folded = _folded(value)
    return folded in PLACEHOLDERS or folded.startswith(("changeme", "replaceme", "your")) or (
        bool(folded) and len(set(folded)) == 1)


def api_token_problem(token: str) -> str | None:
    """Why this `[api] token` must not open the API, or None (empty: the API is off, no problem)."""
    if not token:
        return None
    if is_placeholder(token):
        return f"[api] token is the placeholder {token!r}, which anyone can guess"
    if len(token) < MIN_API_TOKEN:
        return f"[api] token is {len(token)} characters long; it needs at least {MIN_API_TOKEN}"
    return None


def api_enabled(token: str) -> bool:
    """The events API answers only with a real token configured."""
    return bool(token) and api_token_problem(token) is None


def secret_problems(settings: Settings) -> list[str]:
    """What `siyu serve` refuses to start with, each saying how to fix it."""
    problems = []
    api = api_token_problem(settings.api.token)
    if api is not None:
        problems.append(f"{api}: set SIYU_API_TOKEN (or [api] token) to a random secret of at least "
                        f"{MIN_API_TOKEN} characters, e.g. the output of {MAKE_ONE}, or leave it empty to "
                        "keep the events API off")
    mp = settings.channels.wechat_mp
    if mp.enabled:
        for name in ("token", "app_secret"):
            value = getattr(mp, name)
            if is_placeholder(value):
                problems.append(f"[channels.wechat_mp] {name} is the placeholder {value!r}: set it to the value "
                                "from the Official Account console (设置与开发 → 基本配置)")
    gateway = settings.channels.group_gateway
    if gateway.enabled and is_placeholder(gateway.secret):
        problems.append(f"[channels.group_gateway] secret is the placeholder {gateway.secret!r}: set it (or "
                        f"GROUP_GATEWAY_SECRET) to a random secret shared with the gateway, e.g. the output of "
                        f"{MAKE_ONE}")
    return problems
