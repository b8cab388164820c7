"""The real agent as a subprocess: ``edge-agent run --config …``, exactly as systemd runs it.

Tests and benchmarks drive the agent the same way: a YAML config on disk, a separate
process, signals, the metrics endpoint, the JSON log and MQTT topics. Tests use the
defaults (``python -m edge_agent``); benchmarks pass the console script, the environment of
the systemd unit and the CPUs to pin the agent to, and read ``ready_seconds``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.broker import client_config
from harness.metrics import MetricsSnapshot, scrape_url
from harness.net import HOST, free_port
from harness.process import pin_to_cpu, stop_process
from harness.telemetry import PLANT

#: The environment ``systemd/edge-agent.service`` and ``Dockerfile.arm64`` run the agent with.
PRODUCTION_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, merging nested mappings key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def agent_config(
    workdir: Path,
    broker_port: int,
    models_dir: Path,
    units: Sequence[str] = ("unit1",),
    **overrides: Any,
) -> dict[str, Any]:
    """A complete agent config for tests; ``overrides`` are deep-merged on top."""
    base: dict[str, Any] = {
        "agent_id": "test-agent",
        "plant": PLANT,
        "state_dir": str(workdir / "state"),
        "mqtt": client_config(broker_port),
        "units": [{"name": u} for u in units],
        "models": {"dir": str(models_dir)},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "logging": {"level": "INFO", "format": "json"},
        "topics": {"publish_scores": True},
        "alarm": {"on_delay": 3, "off_delay": 5},
    }
    return deep_merge(base, overrides)


@dataclass
class AgentProcess:
    """``edge-agent run --config …`` in a subprocess; JSON logs go to ``log_path``.

    ``command`` is how to invoke the agent (default ``python -m edge_agent``); ``cwd`` defaults
    to ``workdir``; ``cpus`` pins the process right after it starts.
    """

    workdir: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    command: Sequence[str] = ()
    cwd: Path | None = None
    cpus: set[int] | None = None
    proc: subprocess.Popen[bytes] | None = None
    #: seconds from Popen to the ``ready`` log line (set by :meth:`start` with ``wait_ready``)
    ready_seconds: float | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "agent.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    @property
    def metrics_url(self) -> str:
        m = self.config["metrics"]
        return f"http://{m.get('host', HOST)}:{m['port']}/metrics"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        return self.config_path

    def start(
        self, wait_ready: bool = True, timeout: float = 30.0, interval: float = 0.05
    ) -> AgentProcess:
        """Start; with ``wait_ready`` poll the log every ``interval`` s for ``ready``."""
        self.write_config()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        command = list(self.command) or [sys.executable, "-m", "edge_agent"]
        log = self.log_path.open("ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [*command, "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd or self.workdir,
        )
        log.close()
        pin_to_cpu(self.proc.pid, self.cpus)
        if wait_ready:
            self.wait_for_event("ready", timeout=timeout, interval=interval)
            self.ready_seconds = time.monotonic() - started
        return self

    # -- observation ----------------------------------------------------------------------
    def log_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for line in self.log_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"event": "_raw", "line": line})
        return events

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def errors(self) -> list[str]:
        """Log lines at level error or critical (each cut to 300 characters)."""
        out = []
        for line in self.log_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("level") in ("error", "critical"):
                out.append(line[:300])
        return out

    def wait_for_event(
        self, event: str, timeout: float = 20.0, interval: float = 0.05, **fields: Any
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.log_events():
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()):
                    return e
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}"
                )
            time.sleep(interval)
        raise AssertionError(
            f"no {event!r} log event within {timeout}s:\n{self.log_text()[-3000:]}"
        )

    def scrape(self) -> MetricsSnapshot:
        """One scrape of the agent's ``/metrics``."""
        return scrape_url(self.metrics_url)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """One scrape as ``{(sample name, sorted label pairs): value}``."""
        return self.scrape().as_dict()

    def metric(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (``edge_agent_`` prefix optional); 0 if absent."""
        if not name.startswith("edge_agent_"):
            name = "edge_agent_" + name
        return self.scrape().exact(name, **labels)

    def wait_for_metric(
        self, name: str, at_least: float, timeout: float = 20.0, **labels: str
    ) -> float:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            value = self.metric(name, **labels)
            if value >= at_least:
                return value
            time.sleep(0.1)
        raise AssertionError(
            f"{name}{labels} = {value}, wanted >= {at_least}\n{self.log_text()[-2000:]}"
        )

    # -- control --------------------------------------------------------------------------
    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; return (exit code, seconds it took). Raises if it does not exit in time."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t0

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if never started)."""
        return stop_process(self.proc, timeout) if self.proc is not None else None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
