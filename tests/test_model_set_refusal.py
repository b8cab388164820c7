"""Bad configuration and bad model sets are refused — at start, by `check`, and on SIGHUP.

Everything goes through the real command line (``python -m edge_agent check|run``): an
operator who typed a bad value must get one line on stderr naming the key, exit code 2 and
no traceback, whichever command they ran. A running agent that is sent SIGHUP with a broken
model set logs the refusal, counts ``reloads{result="refused"}`` and keeps scoring with the
set it has.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from handmade_models import build_model_set, normal_series
from test_reliability import TELEMETRY, snapshot

from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS
from harness.agent import AgentProcess, agent_config, deep_merge
from harness.broker import MosquittoBroker
from harness.net import free_port
from harness.telemetry import SENSORS

pytestmark = pytest.mark.slow

WINDOW = 10


@dataclass(frozen=True)
class Case:
    """One bad configuration: YAML merged over a good one, the key the error must name."""

    name: str
    config: dict[str, Any]
    #: What the single stderr line must start with (after ``error: ``).
    expect: str
    env: dict[str, str] | None = None
    #: Only `check` can tell (`run` starts and reports it while retrying, by design).
    check_only: bool = False


CONFIG_CASES = [
    Case("port too big", {"mqtt": {"port": 70000}}, "config key mqtt.port:"),
    Case("port not a number", {"mqtt": {"port": "eighty"}}, "config key mqtt.port:"),
    Case("protocol", {"mqtt": {"protocol": "4"}}, "config key mqtt.protocol:"),
    Case("qos", {"mqtt": {"qos": 3}}, "config key mqtt.qos:"),
    Case("keepalive", {"mqtt": {"keepalive": 1}}, "config key mqtt.keepalive:"),
    Case("negative back-off", {"mqtt": {"reconnect_min_seconds": -1}},
         "config key mqtt.reconnect_min_seconds:"),
    Case("back-off inverted", {"mqtt": {"reconnect_min_seconds": 5, "reconnect_max_seconds": 1}},
         "config key mqtt: reconnect_max_seconds must be >= reconnect_min_seconds"),
    Case("typo in a key", {"mqtt": {"hots": "broker"}}, "config key mqtt.hots:"),
    Case("cert without key", {"mqtt": {"tls": {"enabled": True, "cert_file": "/c.pem"}}},
         "config key mqtt.tls: cert_file and key_file must be given together"),
    Case("unit name", {"units": [{"name": "unit 1!"}]}, "config key units.0.name:"),
    Case("duplicate units", {"units": [{"name": "u1"}, {"name": "u1"}]},
         "config key (top level): unit names must be unique"),
    Case("no units", {"units": []}, "config key (top level): configure at least one unit"),
    Case("limits out of order", {"units": [{"name": "u1", "limits": {"load": {"lo": 9, "hi": 1}}}]},
         "config key units.0.limits.load:"),
    Case("limit on an unknown sensor", {"units": [{"name": "u1", "limits": {"lod": {"hi": 1}}}]},
         "config key units."),
    Case("threads", {"models": {"threads": 0}}, "config key models.threads:"),
    Case("stride", {"models": {"stride": 0}}, "config key models.stride:"),
    Case("step", {"align": {"step_seconds": 0}}, "config key align.step_seconds:"),
    Case("on_delay", {"alarm": {"on_delay": 0}}, "config key alarm.on_delay:"),
    Case("outbox rows", {"outbox": {"max_rows": 0}}, "config key outbox.max_rows:"),
    Case("metrics port", {"metrics": {"port": -1}}, "config key metrics.port:"),
    Case("log level", {"logging": {"level": "LOUD"}}, "config key logging.level:"),
    Case("log format", {"logging": {"format": "xml"}}, "config key logging.format:"),
    Case("payload limit", {"ingest": {"max_payload_bytes": 10}},
         "config key ingest.max_payload_bytes:"),
    Case("plant", {"plant": "a/b"}, "config key plant:"),
    Case("topic placeholder", {"topics": {"sensor": "plant/{plant}/{unit}/{oops}"}},
         "config key topics.sensor:"),
    Case("topic without unit", {"topics": {"telemetry": "plant/{plant}/all"}},
         "config key topics.telemetry:"),
    Case("password file missing", {"mqtt": {"username": "u", "password_file": "/nonexistent/pw"}},
         "config key mqtt.password_file:"),
    Case("CA file missing", {"mqtt": {"tls": {"enabled": True, "ca_file": "/nonexistent/ca.pem"}}},
         "config key mqtt.tls.ca_file:", check_only=True),
    Case("environment override", {}, "config key mqtt.port:", env={"EDGE_AGENT_MQTT__PORT": "x"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW)


def good_config(workdir: Path, models: Path) -> dict[str, Any]:
    """A valid config whose broker port is closed (start-up fails before connecting)."""
    config = agent_config(workdir, free_port(), models)
    config["units"] = [{"name": "u1"}]
    return config


def cli(
    command: str, config: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m edge_agent COMMAND --config CONFIG`` exactly as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=config.parent,
    )


#: Runs ``edge_agent.cli.main(argv)`` — what ``python -m edge_agent`` calls — once per case in
#: one interpreter (a table of 50 invocations would otherwise spend a minute starting Pythons),
#: with each case's environment, stdout and stderr of its own, and a 30 s alarm in case a
#: command does not exit. Anything escaping main() is reported as a traceback.
_DRIVER = r"""
import contextlib, io, json, os, signal, sys, traceback
from edge_agent import cli

def too_long(*_):
    raise TimeoutError("the command did not exit")

signal.signal(signal.SIGALRM, too_long)
results = []
for case in json.load(sys.stdin):
    saved = dict(os.environ)
    os.environ.update(case["env"])
    err, out = io.StringIO(), io.StringIO()
    rc, tb = None, None
    signal.alarm(30)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = cli.main(case["argv"])
    except BaseException:
        tb = traceback.format_exc()
    finally:
        signal.alarm(0)
        os.environ.clear()
        os.environ.update(saved)
    results.append({"rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue(), "tb": tb})
print(json.dumps(results))
"""


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    stderr: str
    stdout: str


def cli_many(invocations: Sequence[tuple[list[str], dict[str, str]]]) -> list[Outcome]:
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER],
        input=json.dumps([{"argv": argv, "env": env} for argv, env in invocations]),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return [Outcome(r["rc"], r["stderr"] + (r["tb"] or ""), r["stdout"]) for r in results]


def refusal_problems(proc: Outcome | subprocess.CompletedProcess[str], expect: str) -> list[str]:
    """What is wrong with how a command refused: exit 2, no traceback, exactly one
    ``error:`` line starting with ``expect``; other stderr lines may only be JSON log lines
    (``run`` logs ``starting`` before it finds the problem)."""
    problems = []
    if proc.returncode != 2:
        problems.append(f"exit code {proc.returncode}")
    if "Traceback" in proc.stderr:
        problems.append("a traceback")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    others = [line for line in proc.stderr.splitlines() if line.strip() and line not in errors]
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    elif not errors[0].startswith("error: " + expect):
        problems.append(f"the line does not start with {expect!r}")
    for line in others:
        try:
            json.loads(line)
        except ValueError:
            problems.append(f"stray stderr line {line!r}")
    return problems


def assert_all_refused(results: list[tuple[str, Outcome | Any, str]]) -> None:
    """Every (what, outcome, expect) refused properly; lists every failure at once."""
    failures = []
    for what, proc, expect in results:
        problems = refusal_problems(proc, expect)
        if problems:
            failures.append(f"{what}: {', '.join(problems)}\n    {proc.stderr.strip()}")
    assert not failures, "\n".join(failures)


def test_every_bad_config_value_is_one_line_naming_the_key(tmp_path: Path, model_dir: Path) -> None:
    invocations: list[tuple[list[str], dict[str, str]]] = []
    labels: list[tuple[str, str]] = []
    for i, case in enumerate(CONFIG_CASES):
        workdir = tmp_path / f"case{i}"
        workdir.mkdir()
        config = deep_merge(good_config(workdir, model_dir), case.config)
        path = workdir / "bad.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        for command in ("check",) if case.check_only else ("check", "run"):
            invocations.append(([command, "--config", str(path)], case.env or {}))
            labels.append((f"{command} [{case.name}]", case.expect))
    outcomes = cli_many(invocations)
    assert_all_refused(
        [(what, out, expect) for (what, expect), out in zip(labels, outcomes, strict=True)]
    )


def test_the_real_command_line_refuses_the_same_way(tmp_path: Path, model_dir: Path) -> None:
    """A few cases through ``python -m edge_agent`` itself: exit code, stderr, no traceback."""
    picked = [c for c in CONFIG_CASES if c.name in ("port too big", "password file missing")]
    results = []
    for i, case in enumerate(picked):
        workdir = tmp_path / f"case{i}"
        workdir.mkdir()
        path = workdir / "bad.yaml"
        config = deep_merge(good_config(workdir, model_dir), case.config)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        for command in ("check", "run"):
            results.append((f"{command} [{case.name}]", cli(command, path, case.env), case.expect))
    assert_all_refused(results)


def test_unreadable_config_files_are_one_line_too(tmp_path: Path) -> None:
    cases = {
        "invalid YAML": "mqtt: [port: 1\nunits: {",
        "tab in YAML": "units:\n\t- name: u1\n",
        "not a mapping": "- a\n- b\n",
    }
    invocations: list[tuple[list[str], dict[str, str]]] = []
    labels = []
    for name, text in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(text, encoding="utf-8")
        for command in ("check", "run"):
            invocations.append(([command, "--config", str(path)], {}))
            labels.append(f"{command} [{name}]")
    for command in ("check", "run"):
        invocations.append(([command, "--config", str(tmp_path / "nope.yaml")], {}))
        labels.append(f"{command} [missing file]")
    outcomes = cli_many(invocations)
    assert_all_refused(
        [(what, out, "config file ") for what, out in zip(labels, outcomes, strict=True)]
    )


# -- model sets ------------------------------------------------------------------------------


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def bad_model_sets(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (model dir, what the refusal must say)."""
    out: dict[str, tuple[Path, str]] = {}
    flipped = build_model_set(root / "flipped", window=WINDOW)
    flip_a_byte(flipped / "iforest.onnx")
    out["flipped byte"] = (flipped, "model iforest: checksum mismatch")
    other = build_model_set(root / "other-sensors", THERMAL_UNIT_SENSORS[:7], window=WINDOW)
    out["other sensor list"] = (other, "sensor list mismatch")
    missing = build_model_set(root / "missing", window=WINDOW)
    (missing / "lstm_ae.onnx").unlink()
    out["missing file"] = (missing, "model lstm_ae: file")
    broken = build_model_set(root / "broken-manifest", window=WINDOW)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["window"] = "sixty"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    out["invalid manifest"] = (broken, "invalid manifest")
    return out


def test_bad_model_sets_are_refused_at_start(tmp_path: Path) -> None:
    invocations: list[tuple[list[str], dict[str, str]]] = []
    labels = []
    for i, (name, (models, says)) in enumerate(bad_model_sets(tmp_path / "sets").items()):
        workdir = tmp_path / f"case{i}"
        workdir.mkdir()
        config = good_config(workdir, models)
        # The deployment pins its sensor list: a set with another one is refused at start.
        config["models"]["expected_sensors"] = list(SENSORS)
        path = workdir / "agent.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        for command in ("check", "run"):
            invocations.append(([command, "--config", str(path)], {}))
            labels.append((f"{command} [{name}]", str(models / "manifest.json"), says))
    outcomes = cli_many(invocations)
    assert_all_refused(
        [(what, out, expect) for (what, expect, _), out in zip(labels, outcomes, strict=True)]
    )
    for (what, _, says), out in zip(labels, outcomes, strict=True):
        assert says in out.stderr, f"{what}: {out.stderr}"


def publish_steps(port: int, start: int, n: int, seed: int) -> None:
    from harness.mqtt_client import MqttClient

    client = MqttClient(port, f"plant-{seed}")
    try:
        for k, row in enumerate(normal_series(n, seed=seed)):
            client.publish(TELEMETRY, snapshot(float(start + k), row))
    finally:
        client.close()


def test_sighup_with_a_bad_model_set_keeps_the_running_one_scoring(
    tmp_path: Path, mosquitto: MosquittoBroker, model_dir: Path
) -> None:
    running = shutil.copytree(model_dir, tmp_path / "running")
    # Bursts of contiguous steps, however long the reloads between them take: no step may
    # close at its deadline in between (30 s), only by completeness.
    config = agent_config(tmp_path, mosquitto.port, running, align={"lateness_seconds": 30.0})
    bad = bad_model_sets(tmp_path / "sets")
    with AgentProcess(tmp_path / "agent", config) as agent:
        agent.start()
        version = json.loads((running / "manifest.json").read_text())["model_set_version"]

        def running_version() -> str:
            (found,) = [
                dict(labels)["version"]
                for (name, labels), _ in agent.metrics().items()
                if name == "edge_agent_model_set_info"
            ]
            return found

        assert running_version() == version
        start = int(time.time()) - 100
        publish_steps(mosquitto.port, start, WINDOW + 5, seed=1)
        agent.wait_for_metric("steps_scored", 6)
        step = start + WINDOW + 5
        cases = list(bad.items())
        # In place, too: a byte flipped in the very files the agent runs.
        cases.append(("flipped in place", (running, "model iforest: checksum mismatch")))
        for i, (name, (models, says)) in enumerate(cases, start=1):
            if name == "flipped in place":
                flip_a_byte(running / "iforest.onnx")
            agent.config["models"]["dir"] = str(models)
            agent.write_config()
            scored = agent.metric("steps_scored")
            agent.signal(signal.SIGHUP)
            agent.wait_for_metric("reloads", i, result="refused")
            refusals = [
                e for e in agent.log_events() if e.get("event", "").startswith("reload refused")
            ]
            assert len(refusals) == i and refusals[-1]["level"] == "error"
            assert says in refusals[-1]["error"], (name, refusals[-1])
            assert running_version() == version, name
            # The old set is still scoring.
            publish_steps(mosquitto.port, step, 3, seed=10 + i)
            step += 3
            agent.wait_for_metric("steps_scored", scored + 3)
        assert agent.metric("reloads", result="ok") == 0
        # A good set is taken (the refusals above were about those sets, not about reloads).
        good = build_model_set(tmp_path / "good", window=WINDOW, lstm_threshold=1.7)
        agent.config["models"]["dir"] = str(good)
        agent.write_config()
        agent.signal(signal.SIGHUP)
        agent.wait_for_metric("reloads", 1, result="ok")
        assert running_version() != version
        assert agent.proc is not None and agent.proc.poll() is None
