"""``edge-console``: run the control-room console, check its configuration, hash passwords."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys
from pathlib import Path

from edge_agent.config import ConfigError
from edge_agent.logging_setup import configure_logging

from .config import ConsoleSettings, load_console_settings


def _load(path: Path | None) -> ConsoleSettings | None:
    try:
        return load_console_settings(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 2
    password = settings.mqtt.password
    configure_logging(
        settings.logging.level,
        settings.logging.format,
        secret_values=[password.get_secret_value()] if password else [],
    )
    # Imported here: `check` and `hash-password` must work without starting NiceGUI.
    from .runtime import Console
    from .web.app import serve

    console = Console.create(settings)
    print(f"edge-console on http://{settings.web.host}:{settings.web.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(console))
    return 0


def _check(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 2
    problems = []
    if not settings.users:
        problems.append("no users configured: nobody can sign in to act on alarms")
    if settings.web.session_secret is None:
        problems.append("web.session_secret not set: sign-ins end when the console restarts")
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)
    print(f"config OK: plants {', '.join(settings.plants)}, database {settings.database.url}")
    return 0


def _hash(args: argparse.Namespace) -> int:
    from .web.auth import hash_password

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 2
    if len(password) < 8:
        print("use at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-console", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve the web UI and follow the agents")
    run.add_argument("--config", type=Path, default=None)
    run.set_defaults(func=_run)
    check = sub.add_parser("check", help="validate the configuration")
    check.add_argument("--config", type=Path, default=None)
    check.set_defaults(func=_check)
    hashp = sub.add_parser("hash-password", help="print an argon2 hash for `users`")
    hashp.add_argument("--password-stdin", action="store_true")
    hashp.set_defaults(func=_hash)
    args = parser.parse_args(argv)
    return int(args.func(args))
