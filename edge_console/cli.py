"""``edge-console``: run the control-room console, check its configuration, hash passwords."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import secrets
import socket
import sys
import tempfile
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


def _port_or_free(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demo(args: argparse.Namespace) -> int:
    """The console as ``edge-agent demo`` starts it: demo broker, a one-off operator."""
    from edge_agent.tools.demo import DEMO_LIMITS

    from .web.auth import hash_password

    password = secrets.token_urlsafe(9)
    port = _port_or_free(args.port)
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="edge-console-demo-"))
    settings = load_console_settings(
        None,
        console_id="demo",
        plants=[args.plant],
        state_dir=state_dir,
        mqtt={"host": args.mqtt_host, "port": args.mqtt_port, "protocol": args.protocol},
        web={"port": port, "session_secret": secrets.token_urlsafe(32)},
        users=[{"name": "operator", "password_hash": hash_password(password)}],
        model_dirs=[args.models.resolve()],
        limits={"*": DEMO_LIMITS},
        logging={"level": "WARNING", "format": "console"},
    )
    configure_logging("WARNING", "console")
    from .runtime import Console
    from .web.app import serve

    print(f"console on http://127.0.0.1:{port}/ (sign in as operator / {password})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(Console.create(settings)))
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
    demo = sub.add_parser("demo", help="the console for `edge-agent demo` (throw-away user)")
    demo.add_argument("--mqtt-host", default="127.0.0.1")
    demo.add_argument("--mqtt-port", type=int, required=True)
    demo.add_argument("--protocol", choices=["5", "3.1.1"], default="3.1.1")
    demo.add_argument("--plant", default="demo")
    demo.add_argument("--port", type=int, default=8080, help="web port (a free one if taken)")
    demo.add_argument("--models", type=Path, default=Path("models"))
    demo.add_argument("--state-dir", type=Path, default=None)
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))
