"""Logging: JSON lines that parse, bound context on every line, secrets never written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from edge_agent.logging_setup import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_parse_and_carry_bound_context() -> None:
    buf = io.StringIO()
    log = get_logger(component="alarm")  # created before configuration, still routed
    configure_logging("INFO", "json", buf)
    structlog.contextvars.bind_contextvars(agent_id="edge-01")
    log.bind(unit="unit2").info("alert_raised", alert_id="unit2-42", score=0.93)
    log.debug("not shown at INFO")
    (entry,) = lines(buf)
    assert entry["event"] == "alert_raised"
    assert entry["unit"] == "unit2" and entry["alert_id"] == "unit2-42"
    assert entry["component"] == "alarm" and entry["agent_id"] == "edge-01"
    assert entry["level"] == "info" and entry["score"] == 0.93
    assert entry["timestamp"].endswith("Z") and entry["timestamp"][10] == "T"


def test_stdlib_loggers_share_the_format() -> None:
    buf = io.StringIO()
    configure_logging("DEBUG", "json", buf)
    logging.getLogger("aiomqtt").info("Received %s on %s", "PUBACK", "mid 7")
    (entry,) = lines(buf)
    assert entry["event"] == "Received PUBACK on mid 7"
    assert entry["logger"] == "aiomqtt" and entry["level"] == "info"


def test_exceptions_are_one_json_line() -> None:
    buf = io.StringIO()
    configure_logging("INFO", "json", buf)
    try:
        raise ValueError("bad reading")
    except ValueError:
        get_logger().exception("ingest_failed")
    (entry,) = lines(buf)
    assert "ValueError: bad reading" in entry["exception"]


def test_secrets_are_redacted() -> None:
    buf = io.StringIO()
    configure_logging("INFO", "json", buf, secret_values=["s3cr3t-pw"])
    log = get_logger()
    log.info(
        "connecting",
        mqtt_password="s3cr3t-pw",
        password_file="/etc/edge-agent/mqtt.pw",
        api_token="abc",
        tls={"key_passphrase": "x", "ca_file": "/etc/ca.pem"},
        note="url mqtt://user:s3cr3t-pw@broker",
    )
    logging.getLogger("paho").warning("auth failed for s3cr3t-pw")
    text = buf.getvalue()
    assert "s3cr3t-pw" not in text and "abc" not in text
    first, second = lines(buf)
    assert first["mqtt_password"] == "***" and first["api_token"] == "***"
    assert first["tls"] == {"key_passphrase": "***", "ca_file": "/etc/ca.pem"}
    assert first["password_file"] == "/etc/edge-agent/mqtt.pw"  # where it is, not what it is
    assert first["note"] == "url mqtt://user:***@broker"
    assert second["event"] == "auth failed for ***"


def test_console_format_is_human_readable() -> None:
    buf = io.StringIO()
    configure_logging("INFO", "console", buf)
    get_logger(unit="unit1").warning("sensor_stale", sensor="steam_pressure", password="pw")
    text = buf.getvalue()
    assert "sensor_stale" in text and "unit=unit1" in text and "sensor=steam_pressure" in text
    assert "password=***" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_picks_json_when_not_a_terminal() -> None:
    buf = io.StringIO()  # not a TTY, like journald or docker logs
    configure_logging("INFO", "auto", buf)
    get_logger().info("started")
    assert lines(buf)[0]["event"] == "started"


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", first)
    configure_logging("INFO", "json", second)
    get_logger().info("once")
    assert first.getvalue() == "" and len(lines(second)) == 1


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", "json", io.StringIO())
