"""Configuration: YAML + environment, and one clear line per invalid key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_shipped_example_config_is_valid() -> None:
    s = load_settings(REPO / "config" / "agent.yaml")
    assert s.units[0].name == "unit1"
    assert s.metrics.host == "127.0.0.1"
    assert s.models.enable_cpu_mem_arena is True


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path, "units: [{name: u1}]\nmqtt: {host: fromfile, port: 1884}\n")
    monkeypatch.setenv("EDGE_AGENT_MQTT__HOST", "fromenv")
    monkeypatch.setenv("EDGE_AGENT_ALARM__ON_DELAY", "7")
    s = load_settings(cfg)
    assert s.mqtt.host == "fromenv"
    assert s.mqtt.port == 1884  # untouched keys keep the file's value
    assert s.alarm.on_delay == 7


def test_protocol_accepts_number_from_yaml(tmp_path: Path) -> None:
    assert (
        load_settings(
            write(tmp_path, "units: [{name: u1}]\nmqtt: {protocol: 3.1.1}\n")
        ).mqtt.protocol
        == "3.1.1"
    )
    assert (
        load_settings(write(tmp_path, "units: [{name: u1}]\nmqtt: {protocol: 5}\n")).mqtt.protocol
        == "5"
    )


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("mqtt: {port: 70000}", "mqtt.port"),
        ("mqtt: {protocol: '4'}", "mqtt.protocol"),
        ("mqtt: {qos: 3}", "mqtt.qos"),
        ("mqtt: {tls: {cert_file: /a}}", "mqtt.tls"),
        ("alarm: {on_delay: 0}", "alarm.on_delay"),
        ("align: {lateness_seconds: -1}", "align.lateness_seconds"),
        ("metrics: {port: abc}", "metrics.port"),
        ("logging: {level: LOUD}", "logging.level"),
        ("outbox: {max_rows: 0}", "outbox.max_rows"),
        ("models: {threads: 0}", "models.threads"),
        ("unknown_section: 1", "unknown_section"),
        ("mqtt: {hots: x}", "mqtt.hots"),
    ],
)
def test_each_invalid_value_names_its_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    cfg = write(tmp_path, "units: [{name: u1}]\n" + yaml_text + "\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert len(exc.value.problems) == 1, exc.value.problems
    assert exc.value.problems[0].startswith(f"config key {key}"), exc.value.problems


def test_limits_must_be_ordered(tmp_path: Path) -> None:
    cfg = write(tmp_path, "units: [{name: u1, limits: {load: {hi: 10, hihi: 5}}}]\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert "units.0.limits.load" in exc.value.problems[0]
    assert "ordered" in exc.value.problems[0]


def test_units_required_unless_auto_discovery(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one unit"):
        load_settings(write(tmp_path, "plant: p\n"))
    s = load_settings(write(tmp_path, "ingest: {auto_discover_units: true}\n"))
    assert s.units == []


def test_password_never_echoed_in_errors(tmp_path: Path) -> None:
    cfg = write(tmp_path, "units: [{name: u1}]\nmqtt: {password: hunter2, password_file: /x}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert "hunter2" not in str(exc.value)


@pytest.mark.parametrize("value", ["12345678", "[1, 2]", "{a: 1}", "true"])
def test_invalid_scalar_password_is_named_but_never_shown(tmp_path: Path, value: str) -> None:
    """A password YAML reads as a number (or any wrong type) fails on ``mqtt.password`` itself,
    where the offending input is the password: the key is named, the value is not."""
    cfg = write(tmp_path, f"units: [{{name: u1}}]\nmqtt: {{password: {value}, port: 0}}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    problems = exc.value.problems
    assert any(line.startswith("config key mqtt.password:") for line in problems), problems
    assert any(line.startswith("config key mqtt.port:") and "(got 0)" in line for line in problems)
    if value == "12345678":
        assert "12345678" not in str(exc.value)


def test_console_password_hash_is_never_shown(tmp_path: Path) -> None:
    from edge_console.config import load_console_settings

    cfg = tmp_path / "console.yaml"
    cfg.write_text("users: [{name: op, password_hash: 987654321}]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_console_settings(cfg)
    assert any("users.0.password_hash" in line for line in exc.value.problems)
    assert "987654321" not in str(exc.value)


def test_password_file_is_read(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n", encoding="utf-8")
    s = load_settings(write(tmp_path, f"units: [{{name: u1}}]\nmqtt: {{password_file: {pw}}}\n"))
    assert s.mqtt.resolved_password() == "s3cret"


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(write(tmp_path, "mqtt: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"))
