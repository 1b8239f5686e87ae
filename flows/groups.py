"""What group activity means for the lifecycle, applied in the transaction that stored it.

- A new member is a first contact (their acquisition source is `group:<group id>`).
- A join is logged (`group_joined`); a churned customer who joins comes back as contact; flows
  with the trigger `{event = "group_join"}` start.
- A member's first message of the day in a group is an engaged interaction (`group_message` in
  `[lifecycle] engaged_actions`), which may move them to interest.
- A leave is logged (`group_left`) and is a warning signal: a customer in `at_risk_stages` who
  left `at_risk_group_leaves` groups within `at_risk_group_leave_days` moves to at_risk; flows
  with `{event = "group_leave"}` start (or end, through `exit_on`).
All of it happens on the member's record: their account customer when linked by unionid.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from flows.lifecycle import (
    ENGAGEMENT,
    is_engaged,
    mark_at_risk,
    move_if_interested,
    move_stage,
    record_first_contact,
)
from flows.lifecycle_settings import LifecycleSettings
from flows.reactions import Reactions
from flows.stages import LifecycleStageName as S
from storage.conversations import log_event
from storage.groups import (
    Applied,
    customer_stages,
    lock_customers,
    mark_active,
    recent_event_counts,
)

GROUP_MESSAGE = "group_message"  # the engaged action of a member's first message of the day
GROUP_JOINED, GROUP_LEFT = "group_joined", "group_left"


async def react_to_group_activity(session: AsyncSession, applied: Applied, now: datetime,
                                  settings: LifecycleSettings, reactions: Reactions) -> None:
    for customer in applied.created:
        await record_first_contact(session, customer, f"first contact ({customer.source})", now, reactions)
    # Speaking (once a day is enough to know) and joining are activity: the churn rule sees it.
    await mark_active(session, applied.first_today + [i for i, _ in applied.joined], now)
    await _engagement(session, applied.first_today, now, settings, reactions)
    if not (applied.joined or applied.left):
        return
    customers = {c.id: c for c in await lock_customers(session, [i for i, _ in applied.joined + applied.left])}
    for customer_id, group in applied.joined:
        customer = customers[customer_id]
        log_event(session, customer_id, GROUP_JOINED, now, {"group": group})
        await record_first_contact(session, customer, f"first contact (group:{group})", now, reactions)
        if customer.stage == S.CHURNED:
            await move_stage(session, customer, S.CONTACT, f"joined group {group}", now, reactions)
        await reactions.on_event(session, customer, "group_join", {"group": group}, now)
    if applied.left:
        since = now - timedelta(days=settings.at_risk_group_leave_days)
        earlier = await recent_event_counts(session, [i for i, _ in applied.left], GROUP_LEFT, since)
        for customer_id, group in applied.left:
            customer = customers[customer_id]
            log_event(session, customer_id, GROUP_LEFT, now, {"group": group})
            earlier[customer_id] = left = earlier.get(customer_id, 0) + 1
            threshold = settings.at_risk_group_leaves
            if threshold and left >= threshold and customer.stage in settings.at_risk_stages:
                await mark_at_risk(session, customer, f"left {left} group(s) within "
                                                      f"{settings.at_risk_group_leave_days} days", now, reactions)
            await reactions.on_event(session, customer, "group_leave", {"group": group}, now)


async def _engagement(session: AsyncSession, customer_ids: list[int], now: datetime, settings: LifecycleSettings,
                      reactions: Reactions) -> None:
    """One engaged interaction per member, group and day (logged in bulk, counted in one
    statement); those it brings to the threshold move to interest, their rows locked first."""
    if not customer_ids or not is_engaged(GROUP_MESSAGE, settings):
        return
    for customer_id in customer_ids:
        log_event(session, customer_id, ENGAGEMENT, now, {"signal": GROUP_MESSAGE})
    stages = await customer_stages(session, customer_ids)
    movable = [i for i in dict.fromkeys(customer_ids) if stages.get(i) in (S.CONTACT, S.CHURNED)]
    if not movable:
        return
    await session.flush()
    since = now - timedelta(days=settings.interest_window_days)
    counts = await recent_event_counts(session, movable, ENGAGEMENT, since)
    ready = [i for i in movable if counts.get(i, 0) >= settings.interest_interactions]
    for customer in await lock_customers(session, ready):
        await move_if_interested(session, customer, counts[customer.id], now, settings, reactions)
