"""The push window, as the platforms count it: which customer actions let the brand push how many
messages for how long, and what of the open window is left. Each channel declares its own rules
(a `PushWindow`); the bookkeeping here applies whichever it is given."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from storage.models import Customer


class WindowAction(StrEnum):
    MESSAGE = "message"  # the customer sent a message
    MENU = "menu"  # clicked a click/scancode menu
    FOLLOW = "follow"  # followed the account or scanned a QR code
    PAYMENT = "payment"  # paid


UNLIMITED = -1  # window_quota for a window without a message limit (after a payment)


@dataclass(frozen=True, slots=True)
class WindowGrant:
    """What one customer action allows: `messages` pushes (UNLIMITED for no limit) within `duration`."""

    messages: int
    duration: timedelta


@dataclass(frozen=True, slots=True)
class PushWindow:
    """A channel's window rules: the grant of each customer action that opens a window."""

    grants: Mapping[WindowAction, WindowGrant]

    def grant(self, action: WindowAction) -> WindowGrant | None:
        return self.grants.get(action)


def window_remaining(customer: Customer, now: datetime) -> int | None:
    """Messages still allowed in the open window; None when unlimited, 0 when closed."""
    if customer.window_expires_at is None or customer.window_expires_at <= now:
        return 0
    if customer.window_quota == UNLIMITED:
        return None
    return max(customer.window_quota - customer.window_used, 0)


def open_window(customer: Customer, action: WindowAction, now: datetime, rules: PushWindow | None) -> bool:
    """Open the window a customer's action grants under the channel's `rules` (None: the channel
    has no window); returns whether the window changed.

    WeChat says a new action opens a new window. When the open one still allows more (a
    message's 5-in-48 h window, then a menu click's 3-in-a-minute), keep the larger allowance:
    we track one window per customer and must never count on more than WeChat grants.
    """
    rule = rules.grant(action) if rules is not None else None
    if rule is None:
        return False
    quota, duration = rule.messages, rule.duration
    remaining = window_remaining(customer, now)
    if action is not WindowAction.PAYMENT:
        if remaining is None:  # a payment's unlimited window is still open
            return False
        expires = customer.window_expires_at
        if (action is not WindowAction.MESSAGE and remaining >= quota and expires is not None
                and expires >= now + duration):
            return False
    customer.window_expires_at = now + duration
    # Only what changes: every message renews its window, and setting a mapped attribute is not free.
    if customer.window_quota != quota:
        customer.window_quota = quota
    if customer.window_used:
        customer.window_used = 0
    return True


def close_window(customer: Customer) -> None:
    customer.window_expires_at = None
    customer.window_quota = 0
    customer.window_used = 0
