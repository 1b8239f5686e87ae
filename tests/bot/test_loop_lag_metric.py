"""/metrics tells an operator how long work on the event loop kept messages waiting."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families


async def loop_lag(client) -> dict[str, float]:
    """The histogram's samples: `count`, and `le=X` for each bucket."""
    text = await (await client.get("/metrics")).text()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "siyu_event_loop_lag_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    found["count"] = sample.value
                elif sample.name.endswith("_bucket"):
                    found[f"le={sample.labels['le']}"] = sample.value
    return found


async def until(client, check) -> dict[str, float]:
    for _ in range(200):
        figures = await loop_lag(client)
        if check(figures):
            return figures
        await asyncio.sleep(0.05)
    raise AssertionError(f"loop lag metric never got there: {figures}")


async def test_a_held_event_loop_shows_in_the_loop_lag_metric(wechat):
    server = await wechat()
    before = await until(server.client, lambda f: f.get("count", 0) >= 1)
    time.sleep(0.5)  # some work holding the loop (the app and this test share it)
    after = await until(server.client, lambda f: f["count"] > before["count"])
    # The probe's timer was due at most 0.1 s into the hold: it woke at least 0.4 s late.
    assert after["count"] - after["le=0.25"] >= 1
    assert after["le=+Inf"] == after["count"]
