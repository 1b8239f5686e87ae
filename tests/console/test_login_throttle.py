"""Wrong passwords slow the next try down, by client address and by account name, instead of
locking anyone out; names that exist and names that do not are answered alike; the throttle
acts before any password is hashed."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import aiohttp

from tests.console.conftest import FixedClock
from tests.console.support import create_staff, login

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def from_address(app, last_octet: int) -> aiohttp.ClientSession:
    """A browser on another machine: its requests come from 127.0.0.<last_octet>."""
    return aiohttp.ClientSession(base_url=str(app.client.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 connector=aiohttp.TCPConnector(local_addr=(f"127.0.0.{last_octet}", 0)))


def message(page: str) -> str:
    found = re.search(r'class="message"[^>]*>([^<]*)<', page) or re.search(r"(尝试过于频繁[^<]*|用户名或密码错误[^<]*)", page)
    return found.group(1) if found else page


async def password_checks(app) -> float:
    text = await (await app.client.get("/metrics")).text()
    return float(re.search(r"^siyu_console_password_checks_total ([0-9.]+)$", text, re.MULTILINE).group(1))


async def test_wrong_guesses_slow_an_account_down_but_never_lock_its_owner_out(console):
    clock = FixedClock(T0)
    app = await console(clock=clock, max_failed_logins=3, login_backoff_seconds=1, account_backoff_max_seconds=30)
    await create_staff(app.url, "lin")
    # Someone guesses lin's password from ever new addresses, as fast as the throttle lets them.
    for n in range(12):
        async with from_address(app, 10 + n) as attacker:
            status, page = await login(attacker, "lin", f"guess {n}")
            assert status == 401, (n, page)
        clock.now_value += timedelta(seconds=30)
    async with from_address(app, 2) as owner:
        status, page = await login(owner, "lin")
        assert status == 303, page  # the right password gets in: no lock-out
    clock.now_value += timedelta(seconds=1)
    # Right after a burst of guesses the owner waits a moment, at most account_backoff_max_seconds.
    for n in range(6):
        async with from_address(app, 40 + n) as attacker:
            await login(attacker, "lin", "guess")
    async with from_address(app, 2) as owner:
        status, page = await login(owner, "lin")
        assert status == 429 and "秒后再试" in page
        wait = int(re.search(r"请 (\d+) 秒后再试", page).group(1))
        assert 0 < wait <= 30
        clock.now_value += timedelta(seconds=wait)
        assert (await login(owner, "lin"))[0] == 303


async def test_one_address_guessing_is_slowed_down_whatever_the_names(console):
    clock = FixedClock(T0)
    app = await console(clock=clock, max_failed_logins=3, login_backoff_seconds=1)
    async with from_address(app, 7) as guesser:
        statuses = [(await login(guesser, f"name-{n}", "guess"))[0] for n in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        clock.now_value += timedelta(seconds=1)
        assert (await login(guesser, "name-9", "guess"))[0] == 401  # waited: one more try
        assert (await login(guesser, "name-10", "guess"))[0] == 429  # and the wait has doubled


async def test_unknown_and_known_names_are_answered_alike(console):
    clock = FixedClock(T0)
    app = await console(clock=clock, max_failed_logins=3)
    await create_staff(app.url, "lin")
    answers = {}
    for octet, name in ((20, "lin"), (30, "nobody")):
        before = await password_checks(app)
        seen = []
        for n in range(5):
            async with from_address(app, octet + n) as browser:
                status, page = await login(browser, name, "wrong password")
                seen.append((status, message(page)))
        answers[name] = (seen, await password_checks(app) - before)
    assert answers["lin"] == answers["nobody"]
    seen, hashed = answers["lin"]
    assert [status for status, _ in seen] == [401, 401, 401, 429, 429]
    assert hashed == 3  # each wrong password costs one Argon2 check, known name or not
    assert "锁定" not in str(seen)


async def test_a_login_flood_is_throttled_before_any_password_is_hashed(console):
    app = await console(clock=FixedClock(T0), max_failed_logins=5)
    await create_staff(app.url, "lin")
    before = await password_checks(app)
    async with from_address(app, 9) as flood:
        statuses = await asyncio.gather(*(login(flood, "lin", f"guess {n}") for n in range(20)))
    assert sorted(status for status, _ in statuses) == [401] * 5 + [429] * 15
    assert await password_checks(app) - before == 5
    # The customers' side goes on meanwhile.
    reply = await app.server.say("o-alice", "几点开门")
    assert reply is not None and "营业时间" in reply["Content"]
