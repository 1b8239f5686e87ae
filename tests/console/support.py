"""Staff accounts and logged-in console clients for the console tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientSession

from bot.console.auth import add_staff
from storage.db import make_engine, make_sessionmaker

PASSWORD = "correct horse battery"


async def create_staff(url: str, name: str, role: str = "staff", password: str = PASSWORD) -> int:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            return (await add_staff(session, name, role, password, datetime.now(UTC))).id
    finally:
        await engine.dispose()


def login_csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def login(client: ClientSession, name: str, password: str = PASSWORD) -> tuple[int, str]:
    """Log in through the form as a browser does; returns (status, page or redirect target)."""
    page = await (await client.get("/console/login")).text()
    response = await client.post("/console/login", data={"name": name, "password": password,
                                                         "csrf": login_csrf(page)}, allow_redirects=False)
    return response.status, response.headers.get("Location") or await response.text()


@dataclass
class Staff:
    """A logged-in console user: its own cookie jar, and the CSRF token the page would send."""

    client: ClientSession
    id: int
    csrf: str

    async def get(self, path: str) -> tuple[int, Any]:
        response = await self.client.get(path)
        return response.status, await response.json()

    async def post(self, path: str, body: dict[str, Any] | None = None, csrf: str | None = None) -> tuple[int, Any]:
        response = await self.client.post(path, json=body or {},
                                          headers={"X-CSRF-Token": self.csrf if csrf is None else csrf})
        return response.status, await response.json()

    async def queue(self) -> dict[str, Any]:
        status, data = await self.get("/console/api/queue")
        assert status == 200, data
        return data
