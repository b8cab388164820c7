"""Paths and ports an operator gets wrong in the first hour: relative paths mean "next to
the config file", "not found" names the absolute path and the config key, a busy metrics
port names key and port, and a broker outage keeps saying that it is retrying."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from handmade_models import build_model_set

from edge_agent.config import load_settings
from edge_agent.daemon.mqtt import RETRY_LOG_EVERY_SECONDS, retry_log_due
from harness.agent import AgentProcess, agent_config
from harness.net import HOST, free_port


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def run_agent(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


# -- relative paths --------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    cfg = write(
        etc / "agent.yaml",
        {
            "units": [{"name": "u1"}],
            "state_dir": "var/state",
            "models": {"dir": "models"},
            "mqtt": {
                "password_file": "secrets/pw",
                "tls": {"ca_file": "/abs/ca.pem", "cert_file": "c.pem", "key_file": "k.pem"},
            },
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for key in list(os.environ):
        if key.upper().startswith("EDGE_AGENT_"):
            monkeypatch.delenv(key)
    s = load_settings(Path("..") / "etc" / "agent.yaml")
    assert s.state_dir == etc / "var" / "state"
    assert s.outbox_path == etc / "var" / "state" / "outbox.sqlite"
    assert s.models.dir == etc / "models"
    assert s.mqtt.password_file == etc / "secrets" / "pw"
    assert s.mqtt.tls.ca_file == Path("/abs/ca.pem")  # absolute: untouched
    assert s.mqtt.tls.cert_file == etc / "c.pem"
    assert s.models.dir.is_absolute() and s.state_dir.is_absolute()
    # defaults too: "models" and "state" next to the file
    s = load_settings(write(etc / "minimal.yaml", {"units": [{"name": "u1"}]}))
    assert (s.models.dir, s.state_dir) == (etc / "models", etc / "state")
    # a relative path typed into an environment variable is relative to the cwd
    monkeypatch.setenv("EDGE_AGENT_MODELS__DIR", "mine")
    assert load_settings(cfg).models.dir == Path("mine")


def test_a_missing_model_set_names_the_key_and_the_absolute_path(tmp_path: Path) -> None:
    cfg = write(tmp_path / "etc" / "agent.yaml", {"units": [{"name": "u1"}]})
    proc = run_agent("check", "--config", "etc/agent.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    wanted = tmp_path / "etc" / "models"
    assert proc.stderr.strip() == (
        f"error: config key models.dir: no model set at {wanted} "
        f"({wanted / 'manifest.json'} not found)"
    )
    assert cfg.is_file()


def test_missing_files_name_the_key_and_absolute_path(tmp_path: Path) -> None:
    models = build_model_set(tmp_path / "etc" / "models", window=30)
    write(
        tmp_path / "etc" / "agent.yaml",
        {
            "units": [{"name": "u1"}],
            "models": {"dir": "models"},
            "mqtt": {"password_file": "pw", "tls": {"enabled": True, "ca_file": "ca.pem"}},
        },
    )
    proc = run_agent("check", "--config", "etc/agent.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: config key mqtt.tls.ca_file: file {tmp_path / 'etc' / 'ca.pem'} not found",
        f"error: config key mqtt.password_file: file {tmp_path / 'etc' / 'pw'} not found",
    ]
    assert models.is_dir()
    proc = run_agent("check", "--config", "nope.yaml", cwd=tmp_path)
    assert proc.stderr.strip() == f"error: config file {tmp_path / 'nope.yaml'} not found"


# -- the metrics port ------------------------------------------------------------------------


def test_a_busy_metrics_port_names_the_key_and_the_port(tmp_path: Path) -> None:
    models = build_model_set(tmp_path / "models", window=30)
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = agent_config(tmp_path, free_port(), models, metrics={"host": HOST, "port": port})
        path = write(tmp_path / "agent.yaml", cfg)
        proc = run_agent("run", "--config", str(path), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: config key metrics.port: port {port} on {HOST} is already in use"
    ), proc.stderr
    assert "EDGE_AGENT_METRICS__PORT" in last and "Traceback" not in proc.stderr


# -- reconnect logging -----------------------------------------------------------------------


def test_retry_lines_thin_out_with_the_back_off_but_never_stop() -> None:
    logged = [a for a in range(1, 200) if retry_log_due(a, 1.0)]
    assert logged == [1, 2, 4, 8, 16, 32, 64, 128]
    assert retry_log_due(77, RETRY_LOG_EVERY_SECONDS)  # a long outage still speaks up
    assert not retry_log_due(77, RETRY_LOG_EVERY_SECONDS - 1)


@pytest.mark.slow
def test_an_unreachable_broker_logs_attempts_with_count_and_next_delay(tmp_path: Path) -> None:
    models = build_model_set(tmp_path / "models", window=30)
    cfg = agent_config(
        tmp_path,
        free_port(),  # nobody listens here
        models,
        mqtt={"reconnect_min_seconds": 0.05, "reconnect_max_seconds": 0.2},
    )
    with AgentProcess(tmp_path / "agent", cfg).start(wait_ready=False) as agent:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lines = [e for e in agent.log_events() if e.get("event") == "mqtt_reconnecting"]
            if any(e["attempt"] >= 16 for e in lines):
                break
            time.sleep(0.2)
    warned = [e for e in lines if e["level"] == "warning"]
    assert [e["attempt"] for e in warned][:5] == [1, 2, 4, 8, 16], warned
    for e in warned:
        assert 0 < e["next_delay_seconds"] <= 0.2
        assert e["port"] == cfg["mqtt"]["port"] and e["error"]
    assert warned[-1]["down_for_seconds"] > warned[0]["down_for_seconds"]
