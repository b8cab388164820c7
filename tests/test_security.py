"""The agent on a locked-down broker, as the real process: TLS, passwords, an ACL, secrets.

Mosquitto here runs TLS only (certificates made by the test, harness/pki.py), with a
password file and an ACL that lets the agent read its plant's sensor topics and write only
its alert, score and status topics. Every log line of the agent is checked for the password,
at DEBUG level (paho's and aiomqtt's own debug output included).
"""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from test_reliability import (
    BREACH,
    LIMITS,
    TELEMETRY,
    UNIT,
    Subscriber,
    has_alerts,
    normal_rows,
    snapshot,
    wait_for,
)

from edge_agent.config import MetricsSettings
from harness.agent import AgentProcess, agent_config
from harness.broker import MosquittoBroker
from harness.net import HOST
from harness.pki import Pki
from harness.telemetry import PLANT, SENSORS

pytestmark = pytest.mark.slow

AGENT_USER = "edge-agent"
OPERATOR = "operator"
AGENT_ID = "test-agent"
WINDOW = 60
#: Where the agent may write; scores go to ``FORBIDDEN_SCORES`` in the ACL test instead.
ACL = f"""
user {AGENT_USER}
topic read plant/{PLANT}/+/telemetry
topic read plant/{PLANT}/+/sensors/+
topic write plant/{PLANT}/+/alerts
topic write plant/{PLANT}/+/scores
topic write plant/{PLANT}/edge/{AGENT_ID}/status

user {OPERATOR}
topic readwrite #
"""
FORBIDDEN_SCORES = "plant/{plant}/{unit}/scores-raw"


@pytest.fixture
def secrets() -> dict[str, str]:
    """Fresh passwords per test, long and unique so a grep cannot match by accident."""
    return {AGENT_USER: "agent-" + uuid.uuid4().hex, OPERATOR: "op-" + uuid.uuid4().hex}


@pytest.fixture
def locked_broker(
    mosquitto_factory: Callable[..., MosquittoBroker], mqtt_pki: Pki, secrets: dict[str, str]
) -> MosquittoBroker:
    """TLS only, client certificates required, passwords, ACL."""
    return mosquitto_factory(tls=mqtt_pki, require_certificate=True, passwords=secrets, acl=ACL)


def client_tls(pki: Pki) -> dict[str, Any]:
    return {
        "ca_certs": str(pki.ca_cert),
        "certfile": str(pki.client_cert),
        "keyfile": str(pki.client_key),
    }


@contextlib.contextmanager
def tls_client(port: int, pki: Pki, user: str, password: str, client_id: str) -> Iterator[Any]:
    """A connected paho client over TLS with a client certificate (raises if refused)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.tls_set(**client_tls(pki))
    client.username_pw_set(user, password)
    connected: list[Any] = []
    client.on_connect = lambda *a: connected.append(a[3])
    client.connect(HOST, port, keepalive=10)
    client.loop_start()
    try:
        wait_for(lambda: bool(connected), timeout=10, what=f"{user} to connect")
        assert not connected[0].is_failure, connected[0]
        yield client
    finally:
        client.loop_stop()
        client.disconnect()


def secure_config(
    tmp_path: Path, broker: MosquittoBroker, models: Path, pki: Pki, password_file: Path, **kw: Any
) -> dict[str, Any]:
    config = agent_config(
        tmp_path,
        broker.port,
        models,
        agent_id=AGENT_ID,
        logging={"level": "DEBUG", "format": "json"},
        alarm={"on_delay": 2, "off_delay": 2},
        mqtt={
            "username": AGENT_USER,
            "password_file": str(password_file),
            "reconnect_min_seconds": 0.2,
            "reconnect_max_seconds": 0.5,
            "tls": {
                "enabled": True,
                "ca_file": str(pki.ca_cert),
                "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key),
            },
        },
        **kw,
    )
    config["units"] = [{"name": UNIT, "limits": LIMITS}]
    return config


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from handmade_models import build_model_set

    return build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW)


def password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "mqtt.pw"
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def plant_steps(n: int, breach_last: int = 0, seed: int = 8) -> list[bytes]:
    """``n`` steps ending now; the last ``breach_last`` with the bearing over its limit (a
    limit alert is raised at the second of them)."""
    rows = normal_rows(n, seed=seed)
    if breach_last:
        rows[-breach_last:, SENSORS.index("bearing_temperature")] = BREACH["bearing_temperature"]
    t0 = int(time.time())
    return [snapshot(float(t0 - n + k), row) for k, row in enumerate(rows)]


def test_agent_over_tls_with_password_and_certificate_is_confined_by_the_acl(
    tmp_path: Path, locked_broker: MosquittoBroker, mqtt_pki: Pki, models: Path,
    secrets: dict[str, str],
) -> None:  # fmt: skip
    port = locked_broker.port
    config = secure_config(
        tmp_path, locked_broker, models, mqtt_pki, password_file(tmp_path, secrets[AGENT_USER]),
        topics={"publish_scores": True, "scores": FORBIDDEN_SCORES},
    )  # fmt: skip
    operator_tls = client_tls(mqtt_pki)
    with (
        Subscriber(
            port, ["#"], "operator-console", username=OPERATOR, password=secrets[OPERATOR],
            tls=operator_tls,
        ) as console,
        AgentProcess(tmp_path / "agent", config) as agent,
    ):  # fmt: skip
        agent.start()
        connected = agent.wait_for_event("mqtt_connected")
        assert connected["tls"] is True
        with tls_client(port, mqtt_pki, OPERATOR, secrets[OPERATOR], "plant-gateway") as gw:
            for body in plant_steps(WINDOW + 1, breach_last=5):
                gw.publish(TELEMETRY, body, qos=1).wait_for_publish(5)
        # Reading its sensor topics and writing its alerts is allowed: the alert arrives.
        console.collect(has_alerts(("limit:bearing_temperature", "raised")), timeout=10)
        assert has_alerts(("limit:bearing_temperature", "raised"))(console.received)
        assert agent.metric("messages_accepted") == WINDOW + 1
        # A write the ACL forbids is not delivered: the agent's scores (configured onto a
        # topic outside its ACL) reach no one, not even a subscriber of '#'.
        agent.wait_for_metric("steps_scored", 2, timeout=10)
        time.sleep(1.0)
        console.collect(lambda _: False, timeout=0)
        topics = {m.topic for m in console.received}
        assert f"plant/{PLANT}/{UNIT}/alerts" in topics
        assert not any(t.endswith("/scores-raw") for t in topics), "a forbidden write arrived"

        # With the agent's own credentials and certificate, a client can neither inject
        # readings (write telemetry) nor read what the agent must not (other plants, alerts).
        before = agent.metric("messages_received")
        with tls_client(port, mqtt_pki, AGENT_USER, secrets[AGENT_USER], "stolen-creds") as thief:
            seen: list[str] = []
            thief.on_message = lambda _c, _u, m: seen.append(m.topic)
            thief.subscribe("#", qos=1)
            time.sleep(0.3)
            thief.publish(TELEMETRY, plant_steps(1)[0], qos=1).wait_for_publish(5)
            with tls_client(port, mqtt_pki, OPERATOR, secrets[OPERATOR], "op-3") as op:
                op.publish(f"plant/other/{UNIT}/telemetry", b"1", qos=1).wait_for_publish(5)
                op.publish(f"plant/{PLANT}/{UNIT}/alerts", b"{}", qos=1).wait_for_publish(5)
                op.publish(f"plant/{PLANT}/{UNIT}/sensors/load", b"500", qos=1).wait_for_publish(5)
            wait_for(lambda: bool(seen), timeout=5, what="the allowed sensor topic")
            time.sleep(0.5)
        assert seen == [f"plant/{PLANT}/{UNIT}/sensors/load"], seen
        console.collect(lambda _: False, timeout=0)
        injected = [m for m in console.received if m.topic == TELEMETRY]
        assert len(injected) == WINDOW + 1, "the agent's credentials must not write telemetry"
        # The agent got the operator's sensor reading, but not the injected telemetry.
        agent.wait_for_metric("messages_received", before + 1)
        time.sleep(0.3)
        assert agent.metric("messages_received") == before + 1
        log = agent.log_text()
    # Secrets never reach the log, not even at DEBUG.
    assert '"level":"debug"' in log
    for secret in secrets.values():
        assert secret not in log


def test_agent_over_tls_with_password_only(
    tmp_path: Path,
    mosquitto_factory: Callable[..., MosquittoBroker],
    mqtt_pki: Pki,
    models: Path,
    secrets: dict[str, str],
) -> None:
    """A broker that verifies passwords but asks for no client certificate."""
    broker = mosquitto_factory(tls=mqtt_pki, passwords=secrets, acl=ACL)
    config = secure_config(
        tmp_path, broker, models, mqtt_pki, password_file(tmp_path, secrets[AGENT_USER])
    )
    del config["mqtt"]["tls"]["cert_file"], config["mqtt"]["tls"]["key_file"]
    with AgentProcess(tmp_path / "agent", config) as agent:
        agent.start()
        assert agent.wait_for_event("mqtt_connected")["tls"] is True
        assert agent.metric("broker_connected") == 1
        log = agent.log_text()
    assert secrets[AGENT_USER] not in log
    assert f"New client connected from {HOST}" in broker.log_text()
    assert f"u'{AGENT_USER}'" in broker.log_text(), "logged in as the agent user"


def failed_connections(agent: AgentProcess) -> list[dict[str, Any]]:
    return [e for e in agent.log_events() if e.get("event") == "mqtt_connect_failed"]


def test_wrong_password_is_refused_clearly_and_never_logged(
    tmp_path: Path, locked_broker: MosquittoBroker, mqtt_pki: Pki, models: Path
) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex
    config = secure_config(tmp_path, locked_broker, models, mqtt_pki, tmp_path / "unused")
    del config["mqtt"]["password_file"]
    # The password comes from the environment here (EDGE_AGENT_MQTT__PASSWORD).
    agent = AgentProcess(tmp_path / "agent", config, env={"EDGE_AGENT_MQTT__PASSWORD": wrong})
    with agent:
        agent.start(wait_ready=False)
        wait_for(lambda: len(failed_connections(agent)) >= 3, timeout=20, what="3 refusals")
        first = failed_connections(agent)[0]
        assert first["level"] == "error" and first["cause"] == "auth"
        assert "refused the login" in first["error"] and "mqtt.username/password" in first["error"]
        assert agent.metric("broker_connected") == 0
        assert agent.proc is not None and agent.proc.poll() is None, "keeps running, retrying"
        log = agent.log_text()
    assert '"level":"debug"' in log
    assert wrong not in log
    assert "not authorised" in locked_broker.log_text().lower()


def test_wrong_ca_is_refused_with_a_clear_log_line(
    tmp_path: Path, locked_broker: MosquittoBroker, mqtt_pki: Pki, models: Path,
    secrets: dict[str, str],
) -> None:  # fmt: skip
    config = secure_config(
        tmp_path, locked_broker, models, mqtt_pki, password_file(tmp_path, secrets[AGENT_USER])
    )
    config["mqtt"]["tls"]["ca_file"] = str(mqtt_pki.other_ca_cert)
    with AgentProcess(tmp_path / "agent", config) as agent:
        agent.start(wait_ready=False)
        wait_for(lambda: bool(failed_connections(agent)), timeout=20, what="a refusal")
        first = failed_connections(agent)[0]
        assert first["level"] == "error" and first["cause"] == "tls"
        assert "certificate verify failed" in first["error"]
        assert "mqtt.tls.ca_file" in first["error"]
        assert agent.metric("broker_connected") == 0
        log = agent.log_text()
    assert secrets[AGENT_USER] not in log


# -- the metrics endpoint --------------------------------------------------------------------


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process ``pid`` listens on, from /proc."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            assert len(hex_addr) == width
            if width == 8:
                address = socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_addr)[::-1])
            else:
                raw = b"".join(bytes.fromhex(hex_addr[i : i + 8])[::-1] for i in range(0, 32, 8))
                address = socket.inet_ntop(socket.AF_INET6, raw)
            found.add((address, int(hex_port, 16)))
    return found


def test_listening_addresses_reads_proc_correctly() -> None:
    """The /proc reader tells a wildcard listener from a loopback one (so the next test can
    fail)."""
    import os

    with (
        socket.create_server(("0.0.0.0", 0)) as anyaddr,
        socket.create_server((HOST, 0)) as loopback,
    ):
        found = listening_addresses(os.getpid())
        assert ("0.0.0.0", anyaddr.getsockname()[1]) in found
        assert (HOST, loopback.getsockname()[1]) in found


def test_metrics_endpoint_binds_to_loopback_by_default(
    tmp_path: Path, mosquitto: MosquittoBroker, models: Path
) -> None:
    assert MetricsSettings().host == "127.0.0.1"
    config = agent_config(tmp_path, mosquitto.port, models)
    port = config["metrics"]["port"]
    config["metrics"] = {"port": port}  # host left to its default
    with AgentProcess(tmp_path / "agent", config) as agent:
        agent.start()
        assert agent.proc is not None
        assert listening_addresses(agent.proc.pid) == {(HOST, port)}
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as resp:
            assert b"edge_agent_broker_connected 1.0" in resp.read()  # and it answers there


def test_config_errors_never_echo_a_password(tmp_path: Path) -> None:
    import subprocess
    import sys

    secret = "pw-" + uuid.uuid4().hex
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"units: [{{name: u1}}]\nmqtt:\n  password: [{secret}]\n  port: 0\n", encoding="utf-8"
    )
    for command in ("check", "run"):
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", command, "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 2
        assert "config key mqtt.password" in proc.stderr and "config key mqtt.port" in proc.stderr
        assert secret not in proc.stderr + proc.stdout
        assert "Traceback" not in proc.stderr
