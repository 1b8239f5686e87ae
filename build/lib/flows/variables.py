"""The values flow texts and conditions see: the customer, saved answers, the triggering order."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Customer, FlowRun

# How a customer is addressed before the platform tells us their name.
DEFAULT_NICKNAME = "亲"


class FlowVariables:
    def __init__(self, expiring_soon_days: int = 30):
        self._expiring_soon_days = expiring_soon_days

    async def text_values(self, session: AsyncSession, customer: Customer, run: FlowRun, template: str,
                          now: datetime) -> dict[str, Any]:
        values: dict[str, Any] = {
            "nickname": customer.nickname or DEFAULT_NICKNAME,
            "points": customer.points_balance,
            "stage": customer.stage,
            "source": customer.source or "",
            "flow": run.flow,
        }
        order = run.variables.get("order")
        if isinstance(order, dict):
            values["order"] = SimpleNamespace(id=order.get("id", ""), amount=order.get("amount", ""))
        for key, value in run.variables.items():
            if key != "order":
                values.setdefault(key, value)
        if "{points_" in template:
            from flows.points import points_summary

            summary = await points_summary(session, customer.id, now,
                                           expiring_within_days=self._expiring_soon_days)
            values["points"] = summary.balance
            values["points_expiring"] = summary.expiring_soon
            values["points_expiring_on"] = (summary.expiring_on.strftime("%Y年%m月%d日")
                                            if summary.expiring_on else "暂无")
            values["points_recent"] = "；".join(
                f"{entry.occurred_at:%m-%d} {entry.reason} {entry.delta:+d}" for entry in summary.recent[:3]
            ) or "暂无变动"
        return values

    async def condition_values(self, session: AsyncSession, customer: Customer,
                               variables: dict[str, Any]) -> dict[str, Any]:
        return {
            "stage": customer.stage,
            "source": customer.source or "",
            "tags": list(customer.tags or []),
            "points": customer.points_balance,
            "orders_count": customer.orders_count,
            "lifetime_spend": float(customer.lifetime_spend or 0),
            "subscribed": customer.subscribed,
            "opted_out": customer.marketing_opt_out,
            "event": variables.get("event", ""),
            **{k: v for k, v in variables.items() if k not in ("order",)},
        }
