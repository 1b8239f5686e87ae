"""The `siyu` command line (also `python -m bot`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bot.config.settings import ConfigError, Settings, load_settings, resolve_config_path
from storage.privacy import redact

log = logging.getLogger("siyu")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """Every log line, tracebacks included, with URL query strings and credential parameters
    replaced: a library's error that quotes a request URL would otherwise log the AppSecret."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    logging.basicConfig(level=getattr(args, "log_level", "INFO"), format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    from bot.app.log_limits import limit_repeated_errors

    limit_repeated_errors()  # an outage's errors: one traceback, then a count now and then
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # A line per sweeper run every few seconds drowns what matters; failures still log.
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siyu",
        description="Siyu: a self-hosted private-domain customer bot for WeChat.",
        epilog="The config file is --config, else $SIYU_CONFIG, else ./config.toml. "
               "$SIYU_DATABASE_URL overrides [storage] url.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service (callbacks, simulator, API)",
                                description="Run the HTTP service with its sweepers.")
    serve.add_argument("--config", help="config file (default: $SIYU_CONFIG or ./config.toml)")
    serve.add_argument("--host", help="listen address (overrides [server] host)")
    serve.add_argument("--port", type=int, help="listen port (overrides [server] port)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check-config", help="validate a config file",
                                description="Exit 0 when the config is valid; otherwise print "
                                            "file:line: message for each problem and exit 2. "
                                            "What is valid but likely wrong (a reply that promises "
                                            "退订 from an intent that does not opt out) is printed "
                                            "as file:line: warning: message.")
    check.add_argument("path", help="the TOML config file to check")
    check.set_defaults(func=_check_config)

    chat = commands.add_parser("chat", help="chat with the bot in the terminal (simulator channel)",
                               description="Talk to the bot through the simulator channel. "
                                           "Type /follow to simulate following, /quit to leave. With "
                                           "--group NAME, chat in a simulated customer group instead: "
                                           "/as NAME speaks as another member, /join NAME … and "
                                           "/leave NAME … move members in and out.")
    chat.add_argument("--config", help="config file (default: $SIYU_CONFIG or ./config.toml)")
    chat.add_argument("--user", default="terminal", help="the simulated customer's id (default: terminal)")
    chat.add_argument("--group", metavar="NAME",
                      help="chat in the simulated group NAME, as --user, with [channels.group_gateway]'s "
                           "bot names, keywords and welcome")
    chat.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    chat.set_defaults(func=_chat)

    db = commands.add_parser("db", help="database maintenance", description="Database maintenance.")
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND")
    upgrade = db_commands.add_parser("upgrade", help="apply migrations up to the latest schema",
                                     description="Create or migrate the database to the latest schema.")
    upgrade.add_argument("--config", help="config file (default: $SIYU_CONFIG or ./config.toml)")
    upgrade.add_argument("--url", help="database URL (overrides the config and $SIYU_DATABASE_URL)")
    upgrade.set_defaults(func=_db_upgrade)

    from bot.cli.staff import add_staff_parser

    add_staff_parser(commands)
    from bot.cli.import_events import add_import_parser

    add_import_parser(commands)
    _add_optional_commands(commands)
    return parser


def _add_optional_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    try:
        from bot.cli.nlu_eval import add_nlu_parser
    except ImportError:
        return
    add_nlu_parser(commands)


def _settings(config: str | None) -> Settings:
    warnings: list[str] = []
    settings = load_settings(resolve_config_path(config), warnings=warnings)
    for warning in warnings:
        log.warning("%s", warning)
    return settings


def _check_config(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    load_settings(Path(args.path), warnings=warnings)
    for warning in warnings:
        print(warning, file=sys.stderr)
    count = len(warnings)
    print(f"{args.path}: OK" + (f" ({count} warning{'s' if count != 1 else ''})" if count else ""))
    return 0


async def _schema_problem(url: str) -> str | None:
    from storage.db import make_engine
    from storage.migrate import current_revision, head_revision

    engine = make_engine(url)
    try:
        current = await current_revision(engine)
    except Exception as error:  # noqa: BLE001 - report any connection failure plainly
        return f"cannot reach the database ({error.__class__.__name__}: {error})"
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        return (f"the database schema is at {current or 'nothing'}, this release needs {head}: "
                "run `siyu db upgrade`")
    return None


def _ready_settings(config: str | None, command: str,
                    refusals: Callable[[Settings], list[str]] | None = None) -> Settings | None:
    """Valid settings (none of `refusals`' problems) on a database at this release's schema; None
    (the problems printed) otherwise."""
    settings = _settings(config)
    refused = refusals(settings) if refusals is not None else []
    for refusal in refused:
        print(f"siyu {command}: {refusal}", file=sys.stderr)
    if refused:
        return None
    problem = asyncio.run(_schema_problem(settings.storage.url))
    if problem:
        print(f"siyu {command}: {problem}", file=sys.stderr)
        return None
    return settings


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from bot.app.event_loop import new_event_loop
    from bot.app.web import create_app
    from bot.channels.simulator.access import exposure_problem
    from bot.config.secrets import secret_problems

    def refusals(settings: Settings) -> list[str]:
        exposed = exposure_problem(settings, args.host or settings.server.host)
        return [*secret_problems(settings), *([exposed] if exposed else [])]

    settings = _ready_settings(args.config, "serve", refusals)
    if settings is None:
        return 2
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    loop, loop_name = new_event_loop(settings.server.event_loop)
    log.info("event loop: %s", loop_name)
    web.run_app(create_app(settings), host=host, port=port, access_log=None, loop=loop,
                print=lambda text: log.info(text.strip()))
    return 0


def _chat(args: argparse.Namespace) -> int:
    from bot.cli.chat import run_chat

    settings = _ready_settings(args.config, "chat")
    if settings is None:
        return 2
    if args.group:
        from bot.cli.chat import run_group_chat

        return asyncio.run(run_group_chat(settings, args.group, args.user))
    return asyncio.run(run_chat(settings, args.user))


def _db_upgrade(args: argparse.Namespace) -> int:
    import os

    from storage.migrate import upgrade

    url = args.url
    if not url:
        path = resolve_config_path(args.config)
        if path.exists() or args.config:
            url = load_settings(path).storage.url
        else:
            url = os.environ.get("SIYU_DATABASE_URL") or Settings().storage.url
    problem = _sqlite_directory_problem(url)
    if problem:
        print(f"siyu db upgrade: {problem}", file=sys.stderr)
        return 2
    print(f"upgrading {_redact(url)} to the latest schema")
    try:
        upgrade(url)
    except Exception as error:  # noqa: BLE001 - say what failed, not a traceback
        from storage.privacy import error_text

        print(f"siyu db upgrade: cannot upgrade {_redact(url)}: {error_text(error).splitlines()[0]}",
              file=sys.stderr)
        return 2
    print("database is up to date")
    return 0


def _sqlite_directory_problem(url: str) -> str | None:
    """A SQLite file in a directory that does not exist cannot be created: say so plainly."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    folder = Path(parsed.database).expanduser().resolve().parent
    if folder.is_dir():
        return None
    return (f"the folder {folder} for the SQLite database does not exist: create it "
            f"(mkdir -p {folder}) or set [storage] url / --url to a path in an existing folder")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
