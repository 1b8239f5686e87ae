"""Business hours, and the honest texts that tell a waiting customer when a person will answer."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.console.settings import BusinessHours, StaffSettings
from handlers.router import render

_WEEKDAYS = "一二三四五六日"


def is_open(hours: BusinessHours, now: datetime) -> bool:
    local = now.astimezone(hours.zone)
    return local.isoweekday() in hours.days and hours.open_time <= local.time() < hours.close_time


def next_open(hours: BusinessHours, now: datetime) -> datetime:
    """The next moment people are at work (now, when they already are)."""
    if is_open(hours, now):
        return now
    local = now.astimezone(hours.zone)
    for offset in range(8):
        day = (local + timedelta(days=offset)).date()
        start = datetime.combine(day, hours.open_time, tzinfo=hours.zone)
        if day.isoweekday() in hours.days and start > local:
            return start
    raise AssertionError("business hours name at least one weekday")


def describe(hours: BusinessHours) -> str:
    """`周一至周五 09:00–21:00`, `每天 09:00–21:00`, `周一、周三 …`."""
    days = hours.days
    if days == list(range(1, 8)):
        span = "每天"
    elif days == list(range(days[0], days[-1] + 1)) and len(days) > 2:
        span = f"周{_WEEKDAYS[days[0] - 1]}至周{_WEEKDAYS[days[-1] - 1]}"
    else:
        span = "、".join(f"周{_WEEKDAYS[d - 1]}" for d in days)
    return f"{span} {hours.open}–{hours.close}"


def when(hours: BusinessHours, moment: datetime, now: datetime) -> str:
    """`今天 09:00`, `明天 09:00`, `周一（3月2日）09:00` in the business's time zone."""
    local, today = moment.astimezone(hours.zone), now.astimezone(hours.zone).date()
    clock = local.strftime("%H:%M")
    days = (local.date() - today).days
    if days == 0:
        return f"今天 {clock}"
    if days == 1:
        return f"明天 {clock}"
    return f"周{_WEEKDAYS[local.isoweekday() - 1]}（{local.month}月{local.day}日）{clock}"


def escalation_notice(settings: StaffSettings, now: datetime) -> str:
    """What the customer is told when their chat goes to the staff queue."""
    if is_open(settings.hours, now):
        return settings.escalated_text
    return _fill(settings.off_hours_text, settings, now)


def wait_notice(settings: StaffSettings, now: datetime) -> str:
    """What a customer whose queued chat nobody took within T minutes is told, once."""
    if is_open(settings.hours, now):
        return _fill(settings.wait_text, settings, now)
    return _fill(settings.off_hours_wait_text, settings, now)


def _fill(template: str, settings: StaffSettings, now: datetime) -> str:
    return render(template, {"hours": describe(settings.hours),
                             "next_open": when(settings.hours, next_open(settings.hours, now), now)})
