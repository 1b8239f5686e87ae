"""Config errors name the file, the line and what to fix; valid files load into typed settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {})
    return caught.value.problems


def test_the_shipped_example_is_valid():
    settings = load_settings(ROOT / "config.example.toml", environ={})
    assert settings.server.port == 8080
    assert settings.storage.url.startswith("sqlite+aiosqlite")
    assert settings.channels.simulator.enabled
    assert {rule.name for rule in settings.rules} >= {"business_hours"}


def test_an_unknown_event_loop_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, '[server]\nport = 8080\nevent_loop = "tokio"\n')
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:3: 'server.event_loop'") and "uvloop" in problem


def test_unknown_key_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, '[server]\nhost = "0.0.0.0"\nprot = 8080\n')
    assert problems(path) == [f"{path}:3: unknown key 'server.prot'"]


def test_wrong_type_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, '[server]\nhost = "0.0.0.0"\n\n[channels.wechat_mp]\nreply_deadline_seconds = "soon"\n')
    [problem] = problems(path)
    assert problem.startswith(f"{path}:5: 'channels.wechat_mp.reply_deadline_seconds'")


def test_out_of_range_deadline_is_refused(tmp_path):
    path = write(tmp_path, "[channels.wechat_mp]\nreply_deadline_seconds = 6\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:2:") and "less than 5" in problem


def test_missing_value_in_an_array_of_tables_points_at_that_entry(tmp_path):
    path = write(tmp_path, (
        '[[rules]]\nname = "a"\npatterns = ["x"]\nreply = "甲"\n\n'
        '[[rules]]\nname = "b"\npatterns = ["y"]\n'
    ))
    assert problems(path) == [f"{path}:6: missing value for 'rules.1.reply'"]


def test_every_problem_is_listed_not_just_the_first(tmp_path):
    path = write(tmp_path, '[server]\nport = 0\ncolour = "red"\n\n[[rules]]\nname = "r"\nmatch = "regex"\n'
                           'patterns = ["(unclosed"]\nreply = "x"\n')
    found = problems(path)
    assert len(found) == 3
    assert any(p.startswith(f"{path}:2:") for p in found)
    assert any(p.startswith(f"{path}:3:") and "colour" in p for p in found)
    assert any(p.startswith(f"{path}:5:") and "not a valid regex" in p for p in found)


def test_enabled_channel_without_credentials_is_refused(tmp_path):
    path = write(tmp_path, '[channels.wechat_mp]\nenabled = true\ntoken = "t"\n')
    [problem] = problems(path)
    assert problem.startswith(f"{path}:1:") and "app_id, app_secret is empty" in problem


def test_bad_aes_key_is_refused(tmp_path):
    path = write(tmp_path, '[channels.wechat_mp]\nencoding_aes_key = "short"\n')
    [problem] = problems(path)
    assert problem.startswith(f"{path}:2:") and "43-character" in problem


def test_toml_syntax_error_has_a_line(tmp_path):
    path = write(tmp_path, '[server]\nhost = "unterminated\n')
    [problem] = problems(path)
    assert problem.startswith(f"{path}:2: invalid TOML")


def test_secrets_come_from_the_environment(tmp_path):
    path = write(tmp_path, '[channels.wechat_mp]\napp_secret = "${WECHAT_APP_SECRET}"\n'
                           'app_id = "${WECHAT_APP_ID:-wx-default}"\n')
    settings = load_settings(path, environ={"WECHAT_APP_SECRET": "s3cret"})
    assert settings.channels.wechat_mp.app_secret == "s3cret"
    assert settings.channels.wechat_mp.app_id == "wx-default"


def test_missing_environment_variable_is_named(tmp_path):
    path = write(tmp_path, '[api]\n\ntoken = "${SIYU_API_TOKEN}"\n')
    assert problems(path) == [f"{path}:3: 'api.token': environment variable SIYU_API_TOKEN is not set"]


def test_database_url_can_be_overridden_from_the_environment(tmp_path):
    path = write(tmp_path, '[storage]\nurl = "sqlite+aiosqlite:///a.db"\n')
    settings = load_settings(path, environ={"SIYU_DATABASE_URL": "postgresql+asyncpg://db/siyu"})
    assert settings.storage.url == "postgresql+asyncpg://db/siyu"


def test_unsupported_database_driver_says_which_to_use(tmp_path):
    path = write(tmp_path, '[storage]\nurl = "postgresql://db/siyu"\n')
    [problem] = problems(path)
    assert "postgresql+asyncpg://" in problem and problem.startswith(f"{path}:2:")


def siyu(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=60, **kwargs)


def test_check_config_command_exit_codes(tmp_path):
    ok = siyu("check-config", "config.example.toml")
    assert ok.returncode == 0, ok.stderr
    bad = write(tmp_path, '[server]\nprot = 1\n')
    result = siyu("check-config", str(bad))
    assert result.returncode != 0
    assert result.stderr.strip() == f"{bad}:2: unknown key 'server.prot'"


def test_serve_refuses_an_invalid_config(tmp_path):
    bad = write(tmp_path, '[server]\nport = "eighty"\n')
    result = siyu("serve", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith(f"{bad}:2: 'server.port'")


def test_serve_refuses_an_unmigrated_database(tmp_path):
    config = write(tmp_path, f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path}/fresh.db"\n')
    result = siyu("serve", "--config", str(config))
    assert result.returncode == 2
    assert "run `siyu db upgrade`" in result.stderr


def test_serve_refuses_a_placeholder_or_short_api_token(tmp_path):
    config = write(tmp_path, (ROOT / "config.example.toml").read_text(encoding="utf-8").replace(
        "sqlite+aiosqlite:///siyu.db", f"sqlite+aiosqlite:///{tmp_path}/fresh.db"))
    for token, why in (("change-me", "placeholder 'change-me'"), ("a" * 8 + "b" * 8, "16 characters long")):
        result = siyu("serve", "--config", str(config), env={"SIYU_API_TOKEN": token})
        assert result.returncode == 2, result.stderr
        assert "siyu serve: [api] token is" in result.stderr and why in result.stderr, result.stderr
        assert "SIYU_API_TOKEN" in result.stderr and "at least 32" in result.stderr
    # No token: the API stays off and serve goes on (here to the unmigrated database).
    result = siyu("serve", "--config", str(config), env={"SIYU_API_TOKEN": ""})
    assert result.returncode == 2 and "[api] token" not in result.stderr and "siyu db upgrade" in result.stderr


def test_every_command_has_help():
    for command in (["--help"], ["serve", "--help"], ["check-config", "--help"], ["chat", "--help"],
                    ["db", "upgrade", "--help"]):
        result = siyu(*command)
        assert result.returncode == 0 and "usage: siyu" in result.stdout, command


def test_check_config_warns_when_a_reply_promises_unsubscribing_but_its_intent_does_not_opt_out(tmp_path):
    path = write(tmp_path, """
[[intents]]
name = "stop"
examples = ["别再给我发消息了"]
reply = "已为您退订营销消息。"

[[intents]]
name = "stop_for_real"
examples = ["不要再推送了"]
action = "opt_out"
reply = "已为您退订营销消息。"

[[rules]]
name = "td_rule"
patterns = ["别发了"]
reply = "好的，已为您取消订阅。"
""")
    result = siyu("check-config", str(path))
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2, result.stderr
    assert warnings[0].startswith(f"{path}:5: warning: intent 'stop'") and 'action = "opt_out"' in warnings[0]
    assert warnings[1].startswith(f"{path}:16: warning: rule 'td_rule'")
    shipped = siyu("check-config", "config.example.toml")
    assert shipped.returncode == 0 and "warning" not in shipped.stderr, shipped.stderr
