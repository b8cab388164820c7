"""Real Mosquitto brokers, each on its own free port in its own directory.

Integration tests and benchmarks talk to the broker the agent will meet in a plant, not to a
fake: a :class:`MosquittoBroker` writes a config file, starts ``mosquitto -c`` and waits until
the port accepts connections. Persistence is on, so :meth:`MosquittoBroker.restart` keeps
sessions, subscriptions and queued QoS 1 messages. Mosquitto writes its database on a clean
shutdown (SIGTERM, :meth:`stop`) and every ``autosave_interval`` seconds; after
:meth:`kill` (SIGKILL) whatever changed since the last autosave (1 s by default) is lost,
as it would be after a power cut. TLS certificates for it: :mod:`harness.pki`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.net import HOST, free_port, port_open
from harness.pki import Pki
from harness.process import pin_to_cpu

_START_TIMEOUT_S = 10.0


class MosquittoMissing(RuntimeError):
    """The mosquitto binary is not installed."""


def mosquitto_binary() -> str:
    """Path of the broker binary, or a clear error telling how to install it."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
    )
    if found is None:
        raise MosquittoMissing(
            "mosquitto is not installed: run `apt-get install mosquitto mosquitto-clients` "
            "(`make test` installs it)"
        )
    return found


class MosquittoBroker:
    """One Mosquitto process with persistence, on a free port of 127.0.0.1.

    ``passwords`` (user -> password) turns anonymous access off; ``acl`` is the text of an
    ACL file; ``tls`` makes the listener TLS-only, ``require_certificate`` also demands a
    client certificate signed by the same CA.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        passwords: dict[str, str] | None = None,
        acl: str | None = None,
        tls: Pki | None = None,
        require_certificate: bool = False,
        autosave_interval: int = 1,
        max_queued_messages: int = 100_000,
        extra_config: str = "",
    ) -> None:
        self.binary = mosquitto_binary()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port if port is not None else free_port()
        self._auto_port = port is None
        self._started_once = False
        self.passwords = dict(passwords or {})
        self.acl = acl
        self.tls = tls
        self.require_certificate = require_certificate
        self.autosave_interval = autosave_interval
        self.max_queued_messages = max_queued_messages
        self.extra_config = extra_config
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.persistence_dir = workdir / "data"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- configuration ---------------------------------------------------------------

    def _write_config(self) -> None:
        self.persistence_dir.mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            "autosave_on_changes false",
            f"autosave_interval {self.autosave_interval}",
            f"max_queued_messages {self.max_queued_messages}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
        ]
        if os.geteuid() == 0:
            # Running as root, mosquitto would switch to user "mosquitto", which cannot
            # write into the test's private temporary directory.
            lines.append("user root")
        if self.passwords:
            pw_file = self.workdir / "passwords"
            pw_file.unlink(missing_ok=True)
            passwd = shutil.which("mosquitto_passwd")
            if passwd is None:
                raise MosquittoMissing(
                    "mosquitto_passwd is not installed: run `apt-get install mosquitto`"
                )
            for i, (user, password) in enumerate(self.passwords.items()):
                create = ["-c"] if i == 0 else []
                subprocess.run(
                    [passwd, *create, "-b", str(pw_file), user, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            pw_file.chmod(0o600)
            lines += [f"password_file {pw_file}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(self.acl, encoding="utf-8")
            acl_file.chmod(0o600)
            lines.append(f"acl_file {acl_file}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # -- life cycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> MosquittoBroker:
        """Start and wait (bounded) until the port accepts connections."""
        if self.running:
            return self
        self._write_config()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            runs_before = self._running_lines()
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                # Ready when *this* process logged that it runs and the port answers (an open
                # port alone could be someone else's listener).
                if self._running_lines() > runs_before and port_open(self.port):
                    self._started_once = True
                    return self
                time.sleep(0.02)
            if self._proc.poll() is None:  # alive but never listening
                self.kill()
                raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log_tail()}")
            stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            self._proc = None
            # The port may still be held (TIME_WAIT, or taken by someone else): retry briefly,
            # on a new port if ours was picked at random and never used yet.
            if self._auto_port and not self._started_once:
                self.port = free_port()
                self._write_config()
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"mosquitto failed to start on port {self.port}: {stderr.strip()} "
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: a clean shutdown that writes the persistence database."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash; changes since the last autosave are lost."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self, *, kill: bool = False) -> MosquittoBroker:
        """Stop (or kill) and start again on the same port with the same data."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()
        # Wait until the port is released so a restart or an "unreachable" test sees it closed.
        deadline = time.monotonic() + 5
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _running_lines(self) -> int:
        return sum(1 for line in self.log_text().splitlines() if line.endswith(" running"))

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"MosquittoBroker({self.host}:{self.port}, {state}, tls={self.tls is not None})"


def client_config(port: int, host: str = HOST) -> dict[str, Any]:
    """The ``mqtt`` section of an agent or console config for a harness broker: short
    keepalive and quick reconnects, so restarts and outages play out in seconds."""
    return {
        "host": host,
        "port": port,
        "keepalive": 5,
        "reconnect_min_seconds": 0.2,
        "reconnect_max_seconds": 1.0,
    }


@contextlib.contextmanager
def running_broker(
    workdir: Path, cpus: set[int] | None = None, **options: Any
) -> Iterator[MosquittoBroker]:
    """A started broker (pinned to ``cpus`` when given), killed on exit."""
    broker = MosquittoBroker(workdir, **options)
    broker.start()
    if broker.pid is not None:
        pin_to_cpu(broker.pid, cpus)
    try:
        yield broker
    finally:
        broker.kill()


def mosquitto_version() -> str | None:
    """The installed broker's version (``mosquitto -h``), None when it is not installed."""
    try:
        binary = mosquitto_binary()
    except MosquittoMissing:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5)
        m = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
        if m:
            return m.group(1)
    return None
