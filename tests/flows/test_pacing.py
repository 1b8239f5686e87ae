"""Background work rests in proportion to what it did, so customers' messages keep the loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from flows import pacing
from flows.pacing import Pacer


@pytest.fixture
def rests(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    requested: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        requested.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(pacing.asyncio, "sleep", sleep)
    return requested


async def test_a_sweep_that_worked_a_slice_rests_so_its_work_stays_within_its_share(rests):
    pacer = Pacer(share=0.25, slice_seconds=0.01)
    _busy(0.03)  # a batch that kept the loop busy for 30 ms
    await pacer.pause()
    assert rests and rests[-1] >= 0.03 * 3  # 25 % work: rest three times as long as it worked


async def test_waiting_for_the_database_is_not_work(rests):
    pacer = Pacer(share=0.25, slice_seconds=0.01)
    time.sleep(0.05)  # noqa: ASYNC251 - stands for a statement the loop thread waits on, idle
    await pacer.pause()
    assert rests == [0]


async def test_short_pieces_of_work_only_let_others_run_until_the_slice_is_used(rests):
    pacer = Pacer(share=0.25, slice_seconds=10)
    for _ in range(5):
        await pacer.pause()
    assert rests == [0, 0, 0, 0, 0]


def _busy(seconds: float) -> None:
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="share"):
        asyncio.run(_pacer(0))


async def _pacer(share: float) -> Pacer:
    return Pacer(share=share)
