"""`edge-agent` command line: help, `check`, `simulate` against Mosquitto, and the demo.

Problems a user can fix must end as one ``error:`` line per problem and exit code 2, never
a traceback; a good setup must pass. Most cases call ``edge_agent.cli.main`` in-process
(the same function the console script runs); a few run the real console entry point
(`python -m edge_agent`) to see exactly what an operator sees.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from handmade_models import build_model_set

from edge_agent.cli import build_parser, main
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS
from harness import REPO
from harness.broker import MosquittoBroker
from harness.mqtt_client import MqttClient
from harness.net import free_port
from harness.telemetry import SENSORS

SUBCOMMANDS = {"run", "check", "replay", "simulate", "demo", "schema"}
SHIPPED_MODELS = REPO / "models"


def run_cli(
    *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("models"), window=30, version="hm-cli")


def write_config(path: Path, models_dir: Path, **extra: Any) -> Path:
    config: dict[str, Any] = {
        "agent_id": "cli-test",
        "plant": "p1",
        "units": [{"name": "unit1", "limits": {"bearing_temperature": {"hi": 95.0}}}],
        "models": {"dir": str(models_dir)},
    }
    for key, value in extra.items():
        config[key] = value
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def copy_models(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- help ----------------------------------------------------------------------------------


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("edge-agent has no subcommands")


def test_every_subcommand_is_documented() -> None:
    assert set(subcommands()) == SUBCOMMANDS


@pytest.mark.parametrize("command", [[], *[[c] for c in sorted(SUBCOMMANDS)]])
def test_help_works_on_every_subcommand(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: edge-agent{''.join(' ' + c for c in command)}")
    if command:
        # every option of the subcommand is explained
        for action in subcommands()[command[0]]._actions:
            for flag in action.option_strings:
                assert flag in out
    else:
        for name in SUBCOMMANDS:
            assert name in out


def test_console_entry_point_prints_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: edge-agent")
    assert proc.stderr == ""
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("edge-agent 0.")


# -- check ---------------------------------------------------------------------------------


def test_check_passes_on_a_good_config(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "agent.yaml", models)
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.startswith(f"ok: {config}: model set hm-cli: 8 sensors, window 30")


def test_check_names_the_broken_key_in_one_line_without_traceback(
    models: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "agent.yaml", models, mqtt={"host": "b", "port": 70000})
    proc = run_cli("check", "--config", str(config))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: config key mqtt.port:")
    assert "70000" in lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"mqtt": {"prot": 1884}}, "error: config key mqtt.prot: Extra inputs are not permitted"),
        ({"alarm": {"on_delay": 0}}, "error: config key alarm.on_delay:"),
        ({"plant": "a/b"}, "error: config key plant:"),
        (
            {"units": [{"name": "u1", "limits": {"bearing_temp": {"hi": 1.0}}}]},
            "error: config key units.0.limits.bearing_temp: no such sensor in the model set",
        ),
        (
            {"units": [{"name": "u1", "limits": {"load": {"hi": 5.0, "lo": 9.0}}}]},
            "error: config key units.0.limits.load:",
        ),
        (
            {"mqtt": {"password_file": "/nonexistent/pw"}},
            "error: config key mqtt.password_file: file /nonexistent/pw not found",
        ),
    ],
)
def test_check_reports_config_problems(
    extra: dict[str, Any],
    expected: str,
    models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path / "agent.yaml", models, **extra)
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(expected), err


def test_check_reports_unreadable_yaml_and_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt: [unclosed\n", encoding="utf-8")
    assert main(["check", "--config", str(bad)]) == 2
    assert "invalid YAML" in capsys.readouterr().err
    assert main(["check", "--config", str(tmp_path / "none.yaml")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"error: config file {tmp_path / 'none.yaml'} not found"
    )


def test_check_catches_a_flipped_byte_in_a_model(models: Path, tmp_path: Path) -> None:
    tampered = copy_models(models, tmp_path / "models")
    onnx_file = tampered / "iforest.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx_file.write_bytes(bytes(data))
    config = write_config(tmp_path / "agent.yaml", tampered)
    proc = run_cli("check", "--config", str(config))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "model iforest: checksum mismatch" in lines[0] and str(onnx_file) in lines[0]


def test_check_catches_a_model_set_with_another_sensor_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seven = [s for s in THERMAL_UNIT_SENSORS if s.name != "load"]
    other = build_model_set(tmp_path / "models", seven, window=30)
    config = write_config(
        tmp_path / "agent.yaml",
        other,
        models={"dir": str(other), "expected_sensors": SENSORS},
        units=[{"name": "unit1"}],
    )
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "sensor list mismatch" in err[0]
    assert "'load'" in err[0]


def test_check_catches_a_missing_model_file(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = copy_models(models, tmp_path / "models")
    (broken / "lstm_ae.onnx").unlink()
    config = write_config(tmp_path / "agent.yaml", broken)
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {broken / 'manifest.json'}: model lstm_ae: file {broken / 'lstm_ae.onnx'} "
        "is missing"
    ]
    (broken / "manifest.json").unlink()
    assert main(["check", "--config", str(config)]) == 2
    assert "config key models.dir: no model set at" in capsys.readouterr().err


@pytest.mark.skipif(
    not (SHIPPED_MODELS / "manifest.json").is_file(),
    reason="models/ holds no model set yet (run `make models`)",
)
def test_check_passes_on_the_shipped_config_and_models(tmp_path: Path) -> None:
    """Installed as the README shows (config and models side by side), checked from
    elsewhere: relative paths resolve against the config file."""
    etc = tmp_path / "etc" / "edge-agent"
    etc.mkdir(parents=True)
    shutil.copy(REPO / "config" / "agent.yaml", etc / "agent.yaml")
    shutil.copytree(SHIPPED_MODELS, etc / "models")
    proc = run_cli("check", "--config", str(etc / "agent.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"ok: {etc / 'agent.yaml'}: model set ")


# -- replay and simulate input errors -----------------------------------------------------------


def test_replay_reports_a_csv_without_the_sensor_columns(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "agent.yaml", models)
    data = tmp_path / "data.csv"
    data.write_text("timestamp,load\n2024-01-01T00:00:00Z,500\n", encoding="utf-8")
    rc = main(
        ["replay", "--config", str(config), "--input", str(data), "--output", str(tmp_path / "o")]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing columns" in err[0] and "steam_temperature" in err[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--fault", "meltdown@1+2"], "fault kind 'meltdown' unknown"),
        (["--fault", "spike@x"], "must look like [unit/]kind@start+length[:sensor]"),
        (["--broker", "http://example.com"], "broker URL must look like mqtt://host:port"),
    ],
)
def test_simulate_reports_bad_arguments(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *args, "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_simulate_reports_an_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["simulate", "--broker", url, "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot publish to {url}:"), err


def test_run_refuses_a_tampered_model_set_with_exit_2(models: Path, tmp_path: Path) -> None:
    tampered = copy_models(models, tmp_path / "models")
    onnx_file = tampered / "lstm_ae.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10])  # truncated
    config = write_config(tmp_path / "agent.yaml", tampered, logging={"format": "json"})
    proc = run_cli("run", "--config", str(config), timeout=30)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "model lstm_ae: checksum mismatch" in errors[0], proc.stderr


# -- simulate against a real broker ----------------------------------------------------------


def test_simulate_publishes_readings_to_the_broker(mosquitto: MosquittoBroker) -> None:
    sub = MqttClient(mosquitto.port).subscribe("plant/simplant/#")
    try:
        proc = run_cli(
            "simulate",
            "--broker", f"mqtt://127.0.0.1:{mosquitto.port}",
            "--plant", "simplant",
            "--units", "2",
            "--backfill", "5",
            "--duration", "1.5",
            "--fault", "unit2/stuck@0+30:steam_pressure",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        sent = int(proc.stdout.strip().splitlines()[-1].removeprefix("published ").split()[0])
        got = sub.collect(until=lambda g: len(g) >= sent, timeout=10)
    finally:
        sub.close()
    assert len(got) == sent
    out = proc.stdout.splitlines()
    # fault starts count live steps: the stuck fault @0 is on at live step 0, not at step 5
    assert out[:2] == ["sent 5 steps of history (backfill)", "step 0: units in fault 1/2"]
    per_unit: dict[str, list[dict[str, Any]]] = {}
    for m in got:
        plant, name, unit, kind = m.topic.split("/")
        assert (plant, name, kind) == ("plant", "simplant", "telemetry")
        per_unit.setdefault(unit, []).append(m.json())
    assert set(per_unit) == {"unit1", "unit2"}
    for docs in per_unit.values():
        # 5 backfilled steps, then live ones paced by the wall clock
        assert 6 <= len(docs) <= 9, len(docs)
        stamps = [d["ts"] for d in docs]
        assert stamps == sorted(stamps) and all(b - a == 1.0 for a, b in itertools.pairwise(stamps))
        assert stamps[0] < time.time() - 4
        for d in docs:
            assert list(d["values"]) == SENSORS
            for spec in THERMAL_UNIT_SENSORS:
                assert spec.lo <= d["values"][spec.name] <= spec.hi
    # The stuck transmitter freezes unit2's steam pressure from the first live step on;
    # unit1 and the backfilled history are untouched.
    frozen = [d["values"]["steam_pressure"] for d in per_unit["unit2"][5:]]
    assert len(frozen) >= 2 and len(set(frozen)) == 1
    history = [d["values"]["steam_pressure"] for d in per_unit["unit2"][:5]]
    assert len(set(history)) == 5
    unit1 = [d["values"]["steam_pressure"] for d in per_unit["unit1"]]
    assert len(set(unit1)) == len(unit1)


# -- demo -----------------------------------------------------------------------------------


def test_demo_prints_alerts_and_status_lines(models: Path) -> None:
    started = time.monotonic()
    port = free_port()
    proc = run_cli(
        "demo",
        "--duration", "25",
        "--models", str(models),
        "--units", "2",
        "--port", str(port),
        "--seed", "3",
        "--metrics-port", str(free_port()),
        "--status-every", "4",
        timeout=60,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"embedded MQTT broker (amqtt) on 127.0.0.1:{port}"
    alerts = [line for line in lines if line.startswith("ALERT ")]
    assert alerts, proc.stdout
    line_format = re.compile(
        r"ALERT \d\d:\d\d:\d\d unit[12] (raised|changed|cleared) +(low|medium|high) +\S.* "
        r"\[(anomaly|limit|sensor_stale|flood) [0-9a-f]{8}\]"
    )
    for a in alerts:
        assert line_format.fullmatch(a), a
    assert any(re.search(r" raised +\w+ +Anomaly on unit[12]", a) for a in alerts), alerts
    status = [line for line in lines if line.startswith("status t=")]
    assert all(" in alarm: " in s for s in status)
    assert any(re.search(r" in alarm: unit[12] \(", s) for s in status), status
    assert len(status) >= 3
    scored = [int(s.split("scored=")[1].split()[0]) for s in status]
    assert scored == sorted(scored) and scored[-1] > scored[0]
    assert "connected=1" in status[-1]
    assert lines[-1] == "demo stopped"
    assert "Traceback" not in proc.stderr
    assert seconds < 40


def test_demo_fails_cleanly_when_the_broker_is_unreachable(models: Path) -> None:
    port = free_port()  # nothing listens there
    proc = run_cli(
        "demo",
        "--broker", f"mqtt://127.0.0.1:{port}",
        "--duration", "2",
        "--models", str(models),
        "--metrics-port", str(free_port()),
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"error: cannot connect to the MQTT broker at 127.0.0.1:{port}" in proc.stderr
    assert "ALERT" not in proc.stdout


def test_every_option_of_every_command_is_described() -> None:
    for name, parser in subcommands().items():
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"edge-agent {name} {action.option_strings[0]}: no help"


def test_demo_without_a_model_set_says_what_to_do(tmp_path: Path) -> None:
    proc = run_cli("demo", "--models", str(tmp_path / "nothing"), cwd=tmp_path, timeout=30)
    assert proc.returncode == 2
    wanted = tmp_path / "nothing"
    assert proc.stderr.strip() == (
        f"error: no model set in {wanted} ({wanted / 'manifest.json'} not found): pass "
        "--models DIR with a model set (a directory holding manifest.json and the ONNX files: "
        "the checkout's models/, or one written by `edge-train train --out DIR`)"
    )
    assert "make models" not in proc.stderr  # the wrong fix outside a checkout


def test_demo_finds_the_checkouts_models_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.tools.demo import CHECKOUT, default_models_dir

    monkeypatch.chdir(tmp_path)
    assert default_models_dir() == CHECKOUT / "models" == REPO / "models"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "manifest.json").write_text("{}", encoding="utf-8")
    assert default_models_dir() == Path("models")


def test_the_demo_alarm_board_lists_units_in_alarm() -> None:
    import orjson

    from edge_agent.tools.demo import AlarmBoard, format_alert

    board = AlarmBoard()
    assert board.units_in_alarm() == "none"

    def alert(alert_id: str, unit: str, kind: str, state: str, ts: str = "T") -> bytes:
        doc = {"alert_id": alert_id, "unit": unit, "kind": kind, "state": state}
        return orjson.dumps({**doc, "ts": ts, "raised_at": "T", "severity": "high"})

    board.update(alert("a" * 32, "unit2", "anomaly", "raised"))
    board.update(alert("b" * 32, "unit1", "limit", "raised"))
    board.update(alert("c" * 32, "unit2", "limit", "raised"))
    assert board.units_in_alarm() == "unit1 (limit), unit2 (anomaly, limit)"
    board.update(alert("b" * 32, "unit1", "limit", "cleared"))
    board.update(b"not json")
    assert board.units_in_alarm() == "unit2 (anomaly, limit)"
    doc = {
        "alert_id": "d" * 32,
        "unit": "unit1",
        "kind": "limit",
        "state": "raised",
        "severity": "high",
        "ts": "2026-11-29T05:08:53.000Z",
        "raised_at": "2026-11-29T05:08:51.000Z",
        "message": "Steam temperature 590.0 °C above HIHI 580 °C",
        "resent": False,
    }
    assert format_alert(orjson.dumps(doc)) == (
        "ALERT 05:08:53 unit1 changed  high   Steam temperature 590.0 °C above HIHI 580 °C "
        "[limit dddddddd]"
    )
