"""Fixtures: the real app on a migrated database, a fake WeChat API, WeChat's side of callbacks."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bot.app.web import create_app
from bot.config.settings import RuleSettings, Settings, load_settings
from storage.migrate import upgrade
from storage.schema import metadata
from tests.support.fake_wechat_api import FakeWechatApi
from tests.support.wechat import AES_KEY, APP_ID, APP_SECRET, TOKEN, WechatServer

ROOT = Path(__file__).resolve().parent.parent
SERVER_BACKENDS = {"postgresql": "SIYU_TEST_POSTGRES_URL", "mysql": "SIYU_TEST_MYSQL_URL"}


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test (migrating per test is slow)."""
    path = tmp_path_factory.mktemp("template") / "siyu.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "siyu.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


_migrated: set[str] = set()


async def _reset_server_database(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            if url not in _migrated:
                await connection.run_sync(metadata.drop_all)
                await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
            else:
                for table in reversed(metadata.sorted_tables):
                    await connection.execute(table.delete())
    finally:
        await engine.dispose()
    if url not in _migrated:
        await asyncio.to_thread(upgrade, url)
        _migrated.add(url)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
async def backend_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Every storage test runs on SQLite, and on PostgreSQL/MariaDB when their URLs are set.

    When a URL is set but its server is down, the test fails: connection errors are not skips.
    """
    if request.param == "sqlite":
        return sqlite_url
    url = os.environ.get(SERVER_BACKENDS[request.param])
    if not url:
        pytest.skip(f"set {SERVER_BACKENDS[request.param]} to run on {request.param}")
    await _reset_server_database(url)
    return url


@pytest.fixture
def example_settings() -> Settings:
    return load_settings(ROOT / "config.example.toml", environ={})


def settings_for(base: Settings, url: str, api_base_url: str = "http://127.0.0.1:9", **mp: Any) -> Settings:
    wechat_mp = base.channels.wechat_mp.model_copy(update={
        "enabled": True, "token": TOKEN, "app_id": APP_ID, "app_secret": APP_SECRET,
        "encoding_aes_key": AES_KEY, "api_base_url": api_base_url, **mp,
    })
    return base.model_copy(update={
        "storage": base.storage.model_copy(update={"url": url}),
        "channels": base.channels.model_copy(update={"wechat_mp": wechat_mp}),
    })


@pytest.fixture
async def fake_api(aiohttp_server: Any) -> FakeWechatApi:
    fake = FakeWechatApi(app_id=APP_ID, app_secret=APP_SECRET)
    fake.server = await aiohttp_server(fake.app())
    return fake


Factory = Callable[..., Awaitable[WechatServer]]


@pytest.fixture
async def wechat(aiohttp_client: Any, fake_api: FakeWechatApi, example_settings: Settings,
                 sqlite_url: str) -> AsyncIterator[Factory]:
    """Start the real app (example config, SQLite, fake WeChat API) and talk to it as WeChat."""

    async def start(mode: str = "plain", url: str | None = None, rules: list[dict[str, Any]] | None = None,
                    **mp: Any) -> WechatServer:
        settings = settings_for(example_settings, url or sqlite_url, fake_api.base_url, **mp)
        if rules is not None:
            extra = [RuleSettings(**rule) for rule in rules]
            settings = settings.model_copy(update={"rules": [*extra, *settings.rules]})
        client = await aiohttp_client(create_app(settings))
        return WechatServer(client=client, mode=mode)

    yield start


@pytest.fixture(scope="session", autouse=True)
def _build_each_router_once() -> Iterator[None]:
    """Training the intent classifier takes seconds; a router is immutable, so tests share one per config."""
    import sys

    import bot.app.understanding

    original = bot.app.understanding.build_router
    built: dict[str, Any] = {}

    def cached(settings: Settings) -> Any:
        key = settings.model_dump_json(include={"rules", "intents", "faq", "nlu", "replies"})
        if key not in built:
            built[key] = original(settings)
        return built[key]

    patched = [module for module in list(sys.modules.values())
               if module is not None and getattr(module, "build_router", None) is original]
    for module in patched:
        module.build_router = cached  # type: ignore[attr-defined]
    yield
    for module in patched:
        module.build_router = original  # type: ignore[attr-defined]
