"""When messages cannot be stored (the disk is full), /healthz says so, and the log gets the
error's traceback once instead of once per failed request."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bot.app.log_limits import RepeatedErrors
from tests.bot.test_serve import free_port
from tests.security.support import start

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = "/simulator/api/messages"


async def disk_full(url: str, full: bool) -> None:
    """Every new message row fails as on a full disk, while reads (SELECT 1) still work."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            dialect = connection.dialect.name
            if not full:
                await connection.execute(text("DROP TRIGGER IF EXISTS disk_full" +
                                              (" ON messages" if dialect == "postgresql" else "")))
            elif dialect == "sqlite":
                await connection.execute(text("CREATE TRIGGER disk_full BEFORE INSERT ON messages "
                                              "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"))
            elif dialect == "postgresql":
                await connection.execute(text(
                    "CREATE OR REPLACE FUNCTION disk_full() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; "
                    "END $$ LANGUAGE plpgsql"))
                await connection.execute(text("CREATE TRIGGER disk_full BEFORE INSERT ON messages "
                                              "FOR EACH ROW EXECUTE FUNCTION disk_full()"))
            else:
                await connection.execute(text("CREATE TRIGGER disk_full BEFORE INSERT ON messages FOR EACH ROW "
                                              "SIGNAL SQLSTATE 'HY000' SET MESSAGE_TEXT = 'The table is full'"))
    finally:
        await engine.dispose()


async def test_healthz_answers_503_while_messages_cannot_be_stored(aiohttp_client, example_settings, backend_url,
                                                                   fake_api):
    server = await start(aiohttp_client, example_settings, backend_url, fake_api)
    client = server.client
    assert (await client.post(MESSAGE, json={"user": "amy", "text": "你好"})).status == 200
    assert (await client.get("/healthz")).status == 200
    await disk_full(backend_url, True)
    try:
        assert (await client.post(MESSAGE, json={"user": "amy", "text": "几点开门"})).status >= 500
        response = await client.get("/healthz")
        body = await response.json()
        assert response.status == 503, body
        assert body["database"] is True and body["writes"] is False and body["status"] == "degraded"
    finally:
        await disk_full(backend_url, False)
    assert (await client.post(MESSAGE, json={"user": "amy", "text": "几点开门"})).status == 200
    assert (await client.get("/healthz")).status == 200  # the next stored message says it is back


def post(port: int, body: dict) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{MESSAGE}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_repeated_request_errors_log_one_traceback_not_one_each(tmp_path):
    database = tmp_path / "siyu.db"
    config = tmp_path / "config.toml"
    config.write_text(re.sub(r'(?m)^url\s*=\s*"[^"]*"', f'url = "sqlite+aiosqlite:///{database}"',
                             (ROOT / "config.example.toml").read_text(encoding="utf-8"), count=1), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "SIYU_DATABASE_URL"}
    subprocess.run([sys.executable, "-m", "bot", "db", "upgrade", "--config", str(config)], check=True,
                   capture_output=True, cwd=tmp_path, env=env, timeout=120)
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TRIGGER disk_full BEFORE INSERT ON messages "
                           "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--config", str(config), "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
        try:
            deadline = time.monotonic() + 90
            while "Running on" not in log_path.read_text() and "running on" not in log_path.read_text().lower():
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "siyu serve did not come up"
                time.sleep(0.2)
            statuses = [post(port, {"user": f"u{n}", "text": "你好"}) for n in range(40)]
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    assert statuses == [500] * 40
    output = log_path.read_text()
    errors = [line for line in output.splitlines() if " ERROR " in line]
    # One record with its traceback (the database's error and SQLAlchemy's, chained); the other
    # 39 are counted, in a line once a minute, instead of 39 more tracebacks.
    assert len(errors) == 1, output[-3000:]
    assert "Error handling request" in errors[0]
    assert output.count("The above exception was the direct cause") == 1
    assert "database or disk is full" in output


def test_a_repeated_error_is_logged_whole_once_then_counted_once_an_interval():
    now = [0.0]
    errors = RepeatedErrors(interval=60, clock=lambda: now[0])
    logger = logging.getLogger("tests.repeated")

    def record() -> logging.LogRecord:
        try:
            raise ConnectionRefusedError("database is down")
        except ConnectionRefusedError:
            return logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "request failed", (), sys.exc_info())

    passed = []
    for second in range(150):  # one failing request a second for two and a half minutes
        now[0] = float(second)
        made = record()
        if errors.filter(made):
            passed.append((second, made.exc_info is not None, made.getMessage()))
    assert [(s, tb) for s, tb, _ in passed] == [(0, True), (60, False), (120, False)]
    assert "again: 60 times in the last 60 s" in passed[1][2]
    now[0] = 400.0  # quiet for longer than an interval: the next one is news again, traceback and all
    made = record()
    assert errors.filter(made) and made.exc_info is not None
