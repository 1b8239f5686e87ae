"""One customer's messages take turns in arrival order; a waiter that gives up never stalls the rest."""

from __future__ import annotations

import asyncio

from bot.pipeline.customer_locks import CustomerLocks


async def test_holders_of_one_key_take_turns_in_arrival_order_and_other_keys_do_not_wait() -> None:
    locks = CustomerLocks()
    order: list[str] = []

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(hold("amy", "a1"), hold("amy", "a2"), hold("bob", "b1"), hold("amy", "a3"))

    amy = [step for step in order if step.startswith("a")]
    assert amy == ["a1 in", "a1 out", "a2 in", "a2 out", "a3 in", "a3 out"]
    assert order.index("b1 in") < order.index("a1 out")  # bob never waited for amy
    assert len(locks) == 0  # nothing is kept for idle customers


async def test_a_cancelled_waiter_passes_the_lock_on() -> None:
    locks = CustomerLocks()
    assert locks.try_take("amy")
    assert not locks.try_take("amy")

    gave_up = asyncio.create_task(locks.take("amy"))
    next_in_line = asyncio.create_task(locks.take("amy"))
    await asyncio.sleep(0)
    gave_up.cancel()
    locks.release("amy")
    await asyncio.wait_for(next_in_line, 1)
    assert gave_up.cancelled()

    locks.release("amy")
    assert len(locks) == 0


async def test_a_waiter_cancelled_just_as_the_lock_was_handed_to_it_hands_it_on() -> None:
    locks = CustomerLocks()
    assert locks.try_take("amy")
    handed = asyncio.create_task(locks.take("amy"))
    after = asyncio.create_task(locks.take("amy"))
    await asyncio.sleep(0)
    locks.release("amy")  # handed to the first waiter, which has not run yet …
    handed.cancel()  # … and is cancelled before it does
    await asyncio.wait_for(after, 1)
    locks.release("amy")
    assert len(locks) == 0
