"""What the pipeline did with one inbound, handed back to the channel that delivered it."""

from __future__ import annotations

from dataclasses import dataclass

from handlers.messages import Reply


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the pipeline did with one inbound: the replies to deliver and whether it was a retry."""

    replies: list[Reply]
    message_ids: list[int]
    duplicate: bool = False
    # For a retry: how the original answer went out ("passive", "push", "pending", "failed").
    delivery: str | None = None
