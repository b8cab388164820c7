"""`edge-console run` as a subprocess, and an HTTP client with a cookie jar (tests, benchmarks)."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge_console.web.auth import hash_password
from harness.broker import client_config
from harness.net import HOST, free_port
from harness.process import stop_process

PASSWORD = "correct horse battery"


def console_config(workdir: Path, broker_port: int, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "console_id": "test",
        "plants": ["p1"],
        "state_dir": str(workdir / "state"),
        "mqtt": client_config(broker_port),
        "web": {"port": free_port(), "session_secret": "test-secret-0123456789"},
        "users": [{"name": "alice", "password_hash": hash_password(PASSWORD)}],
        "logging": {"level": "INFO", "format": "json"},
    }
    config.update(extra)
    return config


@dataclass
class ConsoleProcess:
    workdir: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config['web'].get('host', HOST)}:{self.config['web']['port']}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "console.log"

    def start(self, timeout: float = 30.0) -> ConsoleProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "console.yaml"
        cfg.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_console", "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"console exited:\n{self.log_text()[-3000:]}")
            try:
                if self.health()["broker_connected"]:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"console not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/api/health", timeout=5) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)


class Browserless:
    """An HTTP client with cookies, for the sign-in and CSRF tests."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, data=data, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with self.opener.open(req, timeout=15) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def login_token(self) -> str:
        _, _, body = self.request("GET", "/login")
        m = re.search(rb'name="csrf" value="([^"]+)"', body)
        assert m, body[:500]
        return m.group(1).decode()
