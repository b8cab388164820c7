"""A real PostgreSQL server for the tests, on a free port in its own temporary data directory.

``initdb`` refuses to run as root, so as root the cluster is created and run by the
``postgres`` system user (Debian's package creates it; ``nobody`` otherwise) through
``runuser``; the data directory lives in its own ``mkdtemp`` folder under /tmp, owned by
that user (pytest's tmp_path is private to root). Trust authentication on 127.0.0.1 only;
the server is killed and its directory removed afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from harness.net import HOST, free_port, port_open

USER = "console"


class PostgresMissing(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise PostgresMissing(
        f"{name} not found: run `apt-get install postgresql` (`make test` installs it)"
    )


def _service_user() -> str:
    """Debian's ``postgres`` user, or ``nobody`` where the binaries came without it."""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


class PostgresServer:
    def __init__(self) -> None:
        self.initdb = _bin("initdb")
        self.pg_ctl = _bin("pg_ctl")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="edge-console-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_root = os.geteuid() == 0
        self._user = _service_user()
        if self._as_root:
            shutil.chown(self.root, user=self._user)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()} {self.log_tail()}")
        return proc

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}@{HOST}:{self.port}/postgres"

    def start(self) -> PostgresServer:
        if not self.data.exists():
            self._run(
                self.initdb, "-D", str(self.data), "-U", USER, "-A", "trust",
                "--no-sync", "-E", "UTF8", "--locale=C.UTF-8",
            )  # fmt: skip
        opts = (
            f"-p {self.port} -c listen_addresses={HOST} -k {self.root} "
            "-c fsync=off -c shared_buffers=16MB -c max_connections=20"
        )
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start")
        deadline = time.monotonic() + 20
        while not port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
