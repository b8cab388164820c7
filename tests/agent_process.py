"""The real agent as a subprocess, plus a synchronous MQTT test client.

Integration and reliability tests drive `edge-agent run` exactly as systemd would: a
YAML config on disk, a separate process, signals, the metrics endpoint and MQTT topics.
Readings are published with past timestamps in a fast burst; the agent's per-unit event
clock closes such steps by completeness, so a 300-step scenario takes about a second.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as paho
import yaml
from mosquitto import HOST, free_port

from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names
from edge_agent.tools.simulator import FaultEvent, ThermalUnitSimulator

REPO = Path(__file__).resolve().parents[1]
SENSORS = sensor_names(THERMAL_UNIT_SENSORS)
PLANT = "p1"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
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
        "mqtt": {
            "host": HOST,
            "port": broker_port,
            "keepalive": 5,
            "reconnect_min_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
        },
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
    """`edge-agent run --config …` in a subprocess; JSON logs go to ``log_path``."""

    workdir: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "agent.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    @property
    def metrics_url(self) -> str:
        m = self.config["metrics"]
        return f"http://{m['host']}:{m['port']}/metrics"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        return self.config_path

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> AgentProcess:
        self.write_config()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )
        log.close()
        if wait_ready:
            self.wait_for_event("ready", timeout=timeout)
        return self

    # -- observation ----------------------------------------------------------------------
    def log_events(self) -> list[dict[str, Any]]:
        events = []
        if not self.log_path.exists():
            return events
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"event": "_raw", "line": line})
        return events

    def log_text(self) -> str:
        return (
            self.log_path.read_text(encoding="utf-8", errors="replace")
            if self.log_path.exists()
            else ""
        )

    def wait_for_event(self, event: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.log_events():
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()):
                    return e
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(
            f"no {event!r} log event within {timeout}s:\n{self.log_text()[-3000:]}"
        )

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """One sample (``edge_agent_`` prefix optional); 0 when absent."""
        if not name.startswith("edge_agent_"):
            name = "edge_agent_" + name
        samples = self.metrics()
        key = tuple(sorted(labels.items()))
        return samples.get((name, key), samples.get((name + "_total", key), 0.0))

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
        """SIGTERM; return (exit code, seconds it took)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    received: float

    def json(self) -> Any:
        return orjson.loads(self.payload)


class MqttClient:
    """Synchronous paho client for tests: publish, and collect messages from subscriptions."""

    def __init__(
        self,
        port: int,
        client_id: str = "",
        *,
        protocol: int = paho.MQTTv5,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.messages: queue.Queue[Message] = queue.Queue()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.connect(HOST, port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        self.messages.put(Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))

    def subscribe(self, *topics: str, qos: int = 1) -> MqttClient:
        for t in topics:
            info = self.client.subscribe(t, qos=qos)
            assert info[0] == 0, info
        time.sleep(0.2)  # let SUBACK arrive before the scenario starts
        return self

    def publish(
        self, topic: str, payload: bytes | str | float, qos: int = 1, retain: bool = False
    ) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(timeout=10)

    def collect(
        self, until: Any = None, timeout: float = 10.0, topic_prefix: str = ""
    ) -> list[Message]:
        """Messages received until ``until(collected)`` is true or ``timeout`` passes."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                m = self.messages.get(timeout=0.05)
            except queue.Empty:
                if until is not None and until(got):
                    break
                continue
            if m.topic.startswith(topic_prefix):
                got.append(m)
            if until is not None and until(got):
                break
        return got

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


#: Steps simulated and dropped first (see edge_agent.tools.publisher.SimulationPlan.burn_in).
BURN_IN = 1800


def simulated_steps(
    n_steps: int,
    faults: Iterable[FaultEvent] = (),
    seed: int = 0,
    start: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timestamps, values, labels) of a settled simulated unit, ending ~now unless ``start``.

    The simulator starts away from equilibrium, so ``BURN_IN`` steps are simulated first and
    dropped (as the publisher does); fault steps count from the first returned step.
    """
    if start is None:
        start = float(int(time.time()) - n_steps - 5)
    shifted = [
        FaultEvent(f.kind, f.start + BURN_IN, f.end + BURN_IN, f.sensor, f.magnitude)
        for f in faults
    ]
    result = ThermalUnitSimulator(
        seed=seed, day_seconds=3600.0, start_time=start - BURN_IN
    ).generate(n_steps + BURN_IN, shifted)
    keep = slice(BURN_IN, None)
    return result.timestamps[keep], result.values[keep], result.labels[keep]


def telemetry_payload(ts: float, row: Sequence[float]) -> bytes:
    return orjson.dumps(
        {"ts": ts, "values": dict(zip(SENSORS, (float(v) for v in row), strict=True))}
    )


def publish_telemetry(
    client: MqttClient,
    unit: str,
    timestamps: np.ndarray,
    values: np.ndarray,
    plant: str = PLANT,
    qos: int = 1,
) -> None:
    topic = f"plant/{plant}/{unit}/telemetry"
    for ts, row in zip(timestamps, values, strict=True):
        client.publish(topic, telemetry_payload(float(ts), row), qos=qos)
