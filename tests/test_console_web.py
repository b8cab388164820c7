"""The console process over HTTP: loopback bind, sign-in, CSRF, commands reach the broker."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("nicegui")

from harness.broker import MosquittoBroker
from harness.console import PASSWORD, Browserless, ConsoleProcess, console_config
from harness.mqtt_client import MqttClient

pytestmark = pytest.mark.slow


@pytest.fixture
def console(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[ConsoleProcess]:
    proc = ConsoleProcess(tmp_path / "console", console_config(tmp_path, mosquitto.port))
    try:
        yield proc.start()
    finally:
        proc.stop()


def _form(**fields: str) -> bytes:
    return urllib.parse.urlencode(fields).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port``, from the kernel's table."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_binds_loopback_only(console: ConsoleProcess) -> None:
    port = console.config["web"]["port"]
    # 0100007F is 127.0.0.1 (little-endian hex); 00000000 would be every interface.
    assert _listening_addresses(port) == {"0100007F"}
    assert console.health()["broker_connected"] is True


def test_sign_in_csrf_and_commands(console: ConsoleProcess, mosquitto: MosquittoBroker) -> None:
    agent = MqttClient(mosquitto.port, "fake-agent").subscribe("plant/p1/+/alarms/command")
    try:
        web = Browserless(console.url)
        cmd = json.dumps({"plant": "p1", "unit": "unit1", "command": "acknowledge",
                          "alarm": "anomaly", "operator": "mallory"}).encode()  # fmt: skip
        json_h = {"Content-Type": "application/json"}
        # Not signed in: refused before anything else.
        status, _, _ = web.request("POST", "/api/alarms/command", cmd, json_h)
        assert status == 401
        token = web.login_token()
        # A forged sign-in form (no or wrong token) is refused.
        status, _, _ = web.request(
            "POST", "/login", _form(username="alice", password=PASSWORD, csrf="x"), FORM
        )
        assert status == 403
        status, _, body = web.request(
            "POST", "/login", _form(username="alice", password="wrong", csrf=token), FORM
        )
        assert status == 401 and b"Wrong user or password" in body
        status, headers, _ = web.request(
            "POST",
            "/login",
            _form(username="alice", password=PASSWORD, csrf=token, next="//evil.example/"),
            FORM,
        )
        assert status == 303 and headers["location"] == "/"  # no open redirect
        cookie = next(c for c in web.jar if c.name == "edge_console_session")
        assert cookie.has_nonstandard_attr("HttpOnly") or cookie.has_nonstandard_attr("httponly")
        # Signed in, but the session's CSRF token was rotated at sign-in: the old one fails.
        status, _, _ = web.request(
            "POST", "/api/alarms/command", cmd, {**json_h, "X-CSRF-Token": token}
        )
        assert status == 403
        new_token = web.login_token()
        assert new_token != token
        # Right token from another site's page: refused.
        status, _, _ = web.request(
            "POST",
            "/api/alarms/command",
            cmd,
            {**json_h, "X-CSRF-Token": new_token, "Origin": "http://evil.example"},
        )
        assert status == 403
        assert agent.collect(timeout=0.5) == []  # nothing reached the broker so far
        status, _, body = web.request(
            "POST",
            "/api/alarms/command",
            cmd,
            {**json_h, "X-CSRF-Token": new_token, "Origin": console.url},
        )
        assert status == 200, body
        result = json.loads(body)
        assert result["sent"] is True and result["ok"] is False  # no agent answered
        (msg,) = agent.collect(until=lambda got: bool(got), timeout=5)
        assert msg.topic == "plant/p1/unit1/alarms/command"
        sent = msg.json()
        # The operator is the signed-in user, whatever the browser claimed.
        assert sent["operator"] == "alice"
        assert sent["command"] == "acknowledge" and sent["alarm"] == "anomaly"
        assert sent["request_id"] == result["request_id"]
        # Bad commands are refused with a reason, not sent.
        bad = json.dumps({"plant": "p1", "unit": "unit1", "command": "acknowledge"}).encode()
        status, _, body = web.request(
            "POST", "/api/alarms/command", bad, {**json_h, "X-CSRF-Token": new_token}
        )
        assert status == 400 and b"needs an alarm" in body
        other = json.dumps({"plant": "elsewhere", "unit": "u", "command": "in_service"}).encode()
        status, _, _ = web.request(
            "POST", "/api/alarms/command", other, {**json_h, "X-CSRF-Token": new_token}
        )
        assert status == 400
        # Sign out needs the token too, then actions are refused again.
        status, _, _ = web.request("POST", "/logout", _form(csrf="nope"), FORM)
        assert status == 403
        status, _, _ = web.request("POST", "/logout", _form(csrf=new_token), FORM)
        assert status == 303
        status, _, _ = web.request(
            "POST", "/api/alarms/command", cmd, {**json_h, "X-CSRF-Token": new_token}
        )
        assert status == 401
        assert agent.collect(timeout=0.5) == []
    finally:
        agent.close()


def _alert(i: int) -> bytes:
    return json.dumps(
        {
            "alert_id": f"{i:032x}",
            "plant": "p1",
            "unit": "unit1",
            "kind": "anomaly",
            "state": "raised",
            "severity": "high",
            "ts": "2026-11-29T05:08:51.000Z",
            "raised_at": "2026-11-29T05:08:51.000Z",
            "score": 4.2,
            "models": {},
            "top_sensors": [],
            "limit": None,
            "stale_sensors": [],
            "flood": None,
            "model_set_version": "v1",
            "agent_id": "edge-01",
            "resent": False,
            "received_at": None,
        }
    ).encode()


def _wait_events(console: ConsoleProcess, n: int, timeout: float = 20.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    health = console.health()
    while time.monotonic() < deadline:
        health = console.health()
        if health["events_written"] >= n:  # type: ignore[operator]
            return health
        time.sleep(0.1)
    raise AssertionError(f"wanted {n} events archived: {health}")


def test_nothing_lost_in_the_archive_across_broker_and_console_restarts(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    console = ConsoleProcess(tmp_path / "console", console_config(tmp_path, mosquitto.port))
    console.start()
    try:
        plant = MqttClient(mosquitto.port, "agent-side")
        for i in range(10):
            plant.publish("plant/p1/unit1/alerts", _alert(i))
        _wait_events(console, 10)
        plant.close()
        # Broker restart: the console reconnects; what is published meanwhile reaches it.
        mosquitto.restart()
        plant = MqttClient(mosquitto.port, "agent-side-2")
        for i in range(10, 20):
            plant.publish("plant/p1/unit1/alerts", _alert(i))
        _wait_events(console, 20)
        # Console down: its persistent session queues the alerts in the broker.
        console.stop()
        for i in range(20, 30):
            plant.publish("plant/p1/unit1/alerts", _alert(i))
        plant.publish("plant/p1/unit1/alerts", _alert(5))  # a resend: harmless
        plant.close()
        console.start()
        health = _wait_events(console, 10)  # counters restart with the process
        time.sleep(1.0)
        health = console.health()
        assert health["events_written"] == 10 and health["events_duplicate"] == 1, health
        assert health["dropped_events"] == 0 and health["write_failures"] == 0
    finally:
        console.stop()
    from edge_console.archive import Archive, make_engine

    db = tmp_path / "state" / "console.sqlite"
    archive = Archive(make_engine(f"sqlite:///{db}"))
    assert {int(r["alert_id"], 16) for r in archive.events(limit=100)} == set(range(30))
    archive.engine.dispose()
