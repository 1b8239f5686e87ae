"""Pipeline middlewares for tests."""

from __future__ import annotations

from flows.turn import Next, Turn


class Exploding:
    """A middleware that fails on the word "boom", as a bug in a later capability would."""

    async def __call__(self, turn: Turn, next: Next) -> None:
        if turn.inbound.text == "boom":
            raise RuntimeError("stage failed")
        await next(turn)
