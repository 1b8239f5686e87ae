"""`siyu serve` as a person starts it: a real process on the example config, answering over HTTP
on the event loop the config names."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("wanted", ["uvloop", "asyncio"])
def test_serve_answers_on_the_event_loop_the_config_names(tmp_path, wanted):
    database = tmp_path / "siyu.db"
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text = re.sub(r'(?m)^event_loop\s*=\s*"[^"]*"', f'event_loop = "{wanted}"', text, count=1)
    text = re.sub(r'(?m)^url\s*=\s*"[^"]*"', f'url = "sqlite+aiosqlite:///{database}"', text, count=1)
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "SIYU_DATABASE_URL"}
    subprocess.run([sys.executable, "-m", "bot", "db", "upgrade", "--config", str(config)], check=True,
                   capture_output=True, cwd=tmp_path, env=env, timeout=120)
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--config", str(config), "--port", str(port),
                               "--log-level", "INFO"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if get_json(f"http://127.0.0.1:{port}/healthz")["database"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "siyu serve did not come up"
            time.sleep(0.2)
        answer = get_json(f"http://127.0.0.1:{port}/simulator/api/messages", {"user": "amy", "text": "几点开门"})
        assert "营业时间" in answer["replies"][0]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        log.close()
    assert server.returncode == 0
    expected = wanted if wanted == "asyncio" or uvloop_installed() else "asyncio"
    assert f"event loop: {expected}" in (tmp_path / "serve.log").read_text()
