"""Pipeline stages for tests."""

from __future__ import annotations

from flows.turn import Turn


class Exploding:
    """A stage that fails on the word "boom", as a bug in a later capability would."""

    async def before_route(self, turn: Turn) -> None:
        if turn.inbound.text == "boom":
            raise RuntimeError("stage failed")

    async def after_route(self, turn: Turn) -> None:
        return None
