"""Who may use the simulator: this machine only by default; with allow_remote, logged-in console
users only. Its page carries the console's security headers."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from bot.app.http_security import SECURITY_HEADERS
from bot.app.web import create_app
from tests.bot.test_config import siyu, write
from tests.console.conftest import console_settings
from tests.console.support import create_staff, login

ROOT = Path(__file__).resolve().parents[2]
HOURS = {"user": "amy", "text": "几点开门"}


async def start(aiohttp_client, example_settings, sqlite_url, fake_api, **simulator):
    settings = console_settings(example_settings, sqlite_url, fake_api.base_url)
    channels = settings.channels.model_copy(update={
        "simulator": settings.channels.simulator.model_copy(update=simulator)})
    return await aiohttp_client(create_app(settings.model_copy(update={"channels": channels})))


def test_serve_refuses_the_simulator_on_an_address_beyond_loopback(tmp_path):
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8").replace(
        "sqlite+aiosqlite:///siyu.db", f"sqlite+aiosqlite:///{tmp_path}/fresh.db")
    config = write(tmp_path, example)
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        result = siyu("serve", "--config", str(config), "--host", host)
        assert result.returncode == 2 and f"siyu serve: the simulator is on and {host}" in result.stderr
        assert "allow_remote = true" in result.stderr and "enabled = false" in result.stderr
    # On loopback, or with allow_remote, serve goes on (here to the unmigrated database).
    for host, text in (("127.0.0.1", example), ("0.0.0.0", example.replace("allow_remote = false",
                                                                          "allow_remote = true"))):
        result = siyu("serve", "--config", str(write(tmp_path, text)), "--host", host)
        assert result.returncode == 2 and "simulator" not in result.stderr, result.stderr
        assert "siyu db upgrade" in result.stderr


async def test_a_remote_simulator_needs_a_console_login(aiohttp_client, example_settings, sqlite_url, fake_api):
    client = await start(aiohttp_client, example_settings, sqlite_url, fake_api, allow_remote=True)
    response = await client.post("/simulator/api/messages", json=HOURS)
    assert response.status == 401 and "登录" in (await response.json())["error"]
    response = await client.get("/simulator/api/messages", params={"user": "amy"})
    assert response.status == 401
    response = await client.get("/simulator/", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/console/login"

    await create_staff(sqlite_url, "lin")
    async with aiohttp.ClientSession(base_url=str(client.make_url("/")),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        assert (await login(browser, "lin"))[0] == 303
        response = await browser.post("/simulator/api/messages", json=HOURS)
        assert response.status == 200 and "营业时间" in (await response.json())["replies"][0]
        assert (await browser.get("/simulator/")).status == 200
        # A cross-site form (no JSON content type) is refused even with the login cookie.
        response = await browser.post("/simulator/api/messages", data=b'{"user": "amy", "text": "hi"}',
                                      headers={"Content-Type": "text/plain"})
        assert response.status == 415


async def test_the_local_simulator_refuses_requests_through_a_proxy(aiohttp_client, example_settings, sqlite_url,
                                                                    fake_api):
    client = await start(aiohttp_client, example_settings, sqlite_url, fake_api)
    assert (await client.post("/simulator/api/messages", json=HOURS)).status == 200  # from this machine
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        response = await client.post("/simulator/api/messages", json={**HOURS, "user": "eve"},
                                     headers={header: "203.0.113.9"})
        assert response.status == 403 and "allow_remote" in (await response.json())["error"], header
        assert (await client.get("/simulator/", headers={header: "203.0.113.9"})).status == 403


async def test_the_simulator_page_has_the_consoles_security_headers(aiohttp_client, example_settings, sqlite_url,
                                                                    fake_api):
    client = await start(aiohttp_client, example_settings, sqlite_url, fake_api)
    page = await client.get("/simulator/")
    assert page.status == 200
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value, name
    html = await page.text()
    assert "<script>" not in html and '<script src="simulator.js">' in html  # script-src 'self' holds
    script = await client.get("/simulator/simulator.js")
    assert script.status == 200 and "api/messages" in await script.text()
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    console = await client.get("/console/login")
    assert console.headers["Content-Security-Policy"] == page.headers["Content-Security-Policy"]
