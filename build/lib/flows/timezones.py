"""Timezone names as operators and brands write them: checked at load, resolved with a fallback."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator

DEFAULT_TIMEZONE = "Asia/Shanghai"


def check_zone_name(name: str) -> str:
    """For validators: the name back, or a ValueError that says what to write instead."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (use an IANA name like {DEFAULT_TIMEZONE})") from None
    return name


# A settings or payload field holding an IANA zone name, checked when it is loaded.
ZoneName = Annotated[str, AfterValidator(check_zone_name)]


def zone_or_default(name: str | None, default: str = DEFAULT_TIMEZONE) -> ZoneInfo:
    """A customer's zone; a missing or unknown one (stored before validation existed) falls back."""
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)
