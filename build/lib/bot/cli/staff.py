"""`siyu staff add NAME --role staff|operator|admin`: console accounts from the command line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from bot.clock import SystemClock
from bot.config.settings import Settings, load_settings, resolve_config_path
from bot.console.auth import AccountError, Role, add_staff
from storage.db import make_engine, make_sessionmaker


def add_staff_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    staff = commands.add_parser("staff", help="staff console accounts", description="Staff console accounts.")
    staff_commands = staff.add_subparsers(title="commands", metavar="COMMAND")
    add = staff_commands.add_parser(
        "add", help="create a console account",
        description="Create a console account. The password is asked twice (or read from standard "
                    "input with --password-stdin) and stored only as an Argon2 hash.")
    add.add_argument("name", help="login name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role],
                     help="staff: the queue and own chats; operator: every chat; admin: everything")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--config", help="config file (default: $SIYU_CONFIG or ./config.toml)")
    add.add_argument("--url", help="database URL (overrides the config and $SIYU_DATABASE_URL)")
    add.set_defaults(func=_add)


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    path = resolve_config_path(args.config)
    if path.exists() or args.config:
        return load_settings(path).storage.url
    return os.environ.get("SIYU_DATABASE_URL") or Settings().storage.url


def _password(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("密码 / password: ")
    if first != getpass.getpass("再输一次 / again: "):
        print("siyu staff add: the two passwords differ", file=sys.stderr)
        return None
    return first


def _add(args: argparse.Namespace) -> int:
    password = _password(args.password_stdin)
    if password is None:
        return 2
    try:
        asyncio.run(_create(_url(args), args.name, args.role, password))
    except AccountError as error:
        print(f"siyu staff add: {error}", file=sys.stderr)
        return 2
    print(f"created {args.role} account {args.name!r}")
    return 0


async def _create(url: str, name: str, role: str, password: str) -> None:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await add_staff(session, name, role, password, SystemClock().now())
    finally:
        await engine.dispose()
