"""The agent daemon end to end: `edge-agent run` as a subprocess against a real Mosquitto.

Each scenario publishes a burst of past-timestamped readings (the agent's per-unit event
clock closes those steps on completeness, so a few hundred steps take about a second) and
then looks at what a plant's systems would see: alert and score messages with their MQTT 5
properties, the retained status, /metrics, the JSON log, the exit code. The models are the
deterministic hand-made z-score set (tests/handmade_models.py), so every alarm transition
happens at a step the test can name; one test runs the shipped model set on simulator data.
"""

from __future__ import annotations

import csv
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import paho.mqtt.client as paho
import pytest
from handmade_models import build_model_set, normal_series

from edge_agent.pipeline.alerts import SEVERITIES, alert_json_schema, rfc3339, scores_json_schema
from edge_agent.pipeline.manifest import MANIFEST_NAME
from edge_agent.tools.simulator import FaultEvent
from harness import REPO
from harness.agent import AgentProcess, agent_config
from harness.broker import MosquittoBroker
from harness.mqtt_client import Message, MqttClient
from harness.telemetry import PLANT, SENSORS, simulated_steps

pytestmark = pytest.mark.slow

#: Small window: short warm-up, so scenarios need fewer steps.
WINDOW = 30
UNIT = "unit1"
TELEMETRY = f"plant/{PLANT}/{UNIT}/telemetry"
ALERTS = f"plant/{PLANT}/{UNIT}/alerts"
SCORES = f"plant/{PLANT}/{UNIT}/scores"
SHIPPED_MODELS = REPO / "models"


def status_topic(agent_id: str) -> str:
    return f"plant/{PLANT}/edge/{agent_id}/status"


ALERT_FIELDS = (
    "alert_id",
    "plant",
    "unit",
    "kind",
    "state",
    "severity",
    "ts",
    "raised_at",
    "score",
    "models",
    "top_sensors",
    "model_set_version",
    "agent_id",
    "resent",
)


# -- helpers -----------------------------------------------------------------------------


@dataclass
class Received(Message):
    """A message as a subscriber saw it, with its MQTT 5 properties."""

    properties: Any = None


class Recorder(MqttClient):
    """Test subscriber that keeps every message (with properties) for later inspection."""

    def __init__(self, port: int) -> None:
        self.all: list[Received] = []
        self._lock = threading.Lock()
        super().__init__(port)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        m = Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.time(), msg.properties)
        with self._lock:
            self.all.append(m)

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.all if m.topic == topic]

    def wait_for(
        self, what: str, predicate: Callable[[Recorder], bool], timeout: float = 15.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; got {len(self.all)} messages")

    def publish_all(self, items: Sequence[tuple[str, bytes]], qos: int = 1) -> None:
        """Publish in order without waiting for each PUBACK, then wait for all of them."""
        infos = [self.client.publish(t, p, qos=qos) for t, p in items]
        for info in infos:
            info.wait_for_publish(timeout=20)


def step_times(n: int) -> np.ndarray:
    """Whole-second step starts ending a few seconds ago (the event clock closes them)."""
    return float(int(time.time()) - n - 5) + np.arange(n, dtype=float)


def telemetry_items(
    ts: np.ndarray, values: np.ndarray, unit: str = UNIT, skip: Sequence[tuple[int, str]] = ()
) -> list[tuple[str, bytes]]:
    """One telemetry message per step; ``skip`` leaves (step, sensor) pairs out."""
    topic = f"plant/{PLANT}/{unit}/telemetry"
    missing: dict[int, set[str]] = {}
    for i, name in skip:
        missing.setdefault(i, set()).add(name)
    items = []
    for i, (t, row) in enumerate(zip(ts, values, strict=True)):
        gone = missing.get(i, set())
        doc = {n: float(v) for n, v in zip(SENSORS, row, strict=True) if n not in gone}
        items.append((topic, orjson.dumps({"ts": float(t), "values": doc})))
    return items


def sensor_items(
    ts: np.ndarray, values: np.ndarray, skip: Callable[[int, str], bool]
) -> list[tuple[str, bytes]]:
    """One message per sensor per step on the per-sensor topics."""
    items = []
    for i, (t, row) in enumerate(zip(ts, values, strict=True)):
        for name, v in zip(SENSORS, row, strict=True):
            if not skip(i, name):
                topic = f"plant/{PLANT}/{UNIT}/sensors/{name}"
                items.append((topic, orjson.dumps({"ts": float(t), "value": float(v)})))
    return items


def parse_ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def alerts_of(rec: Recorder, kind: str, unit: str = UNIT) -> list[dict[str, Any]]:
    return [
        d for d in (m.json() for m in rec.on(f"plant/{PLANT}/{unit}/alerts")) if d["kind"] == kind
    ]


def user_properties(m: Received) -> dict[str, str]:
    return dict(getattr(m.properties, "UserProperty", []) or [])


def model_set_info(agent: AgentProcess) -> dict[str, str]:
    infos = [
        dict(labels)
        for (name, labels), value in agent.metrics().items()
        if name == "edge_agent_model_set_info" and value == 1.0
    ]
    assert len(infos) == 1, infos
    return infos[0]


def start_agent(
    workdir: Path,
    port: int,
    models: Path,
    agent_id: str,
    unit_settings: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> AgentProcess:
    """Start `edge-agent run`; ``unit_settings`` replaces the plain ``units`` list.

    Every scenario has its own ``agent_id``, hence its own MQTT client id: two agents with
    one client id on one broker would take the session from each other in a loop.
    """
    config = agent_config(workdir, port, models, agent_id=agent_id, **overrides)
    if unit_settings is not None:
        config["units"] = unit_settings
    return AgentProcess(workdir, config).start()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW, version="hm-v1")


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


# -- scenario 1: an anomaly on telemetry, bad payloads in between, then SIGTERM -----------

N_STEPS = 200
FAULT = (80, 95)  # steps with steam_temperature 30 sd too high
BAD_AFTER = 120  # bad payloads are published after this many good steps
#: (topic, payload, reason it must be counted under)
BAD_PAYLOADS: tuple[tuple[str, bytes, str], ...] = (
    (TELEMETRY, b"{not json", "bad_json"),
    (TELEMETRY, b'{"values": {"steam_pressure": NaN}}', "not_finite"),
    (TELEMETRY, b'{"values": {"steam_pressure": 1e999}}', "not_finite"),
    (f"plant/{PLANT}/{UNIT}/sensors/load", b"NaN", "not_finite"),
    (TELEMETRY, b'{"values": {"steam_temperature": 5000.0}}', "out_of_range"),
    (f"plant/{PLANT}/{UNIT}/sensors/load", b'{"value": -3.0}', "out_of_range"),
    (f"plant/{PLANT}/unit9/telemetry", b'{"values": {"load": 500.0}}', "unknown_unit"),
    (f"plant/{PLANT}/{UNIT}/sensors/no_such_sensor", b'{"value": 1.0}', "unknown_sensor"),
    (TELEMETRY, b'{"values": {"steam_pressure": "high"}}', "bad_type"),
    (TELEMETRY, b'{"values": {"x": ' + b"1" * 70_000 + b"}}", "oversized"),
)


@dataclass
class AnomalyRun:
    agent: AgentProcess
    rec: Recorder
    ts: np.ndarray
    version: str
    before: dict[str, float]
    after: dict[str, float]
    scored_bounds: tuple[float, float] = (0.0, 0.0)
    info: dict[str, str] = field(default_factory=dict)
    exit: tuple[int, float] = (-1, 0.0)
    stopped_status: list[Received] = field(default_factory=list)
    retained_after_exit: list[Message] = field(default_factory=list)


def _snapshot(agent: AgentProcess) -> dict[str, float]:
    names = {
        "received": ("messages_received", {}),
        "accepted": ("readings_accepted", {}),
        "complete": ("steps_closed", {"how": "complete"}),
        "scored": ("steps_scored", {}),
        "warmup": ("steps_dropped", {"reason": "warmup"}),
        "raised": ("alerts_raised", {"kind": "anomaly"}),
        "cleared": ("alerts_cleared", {"kind": "anomaly"}),
        "published": ("alerts_published", {}),
        "iforest_batches": ("inference_seconds_count", {"model": "iforest"}),
        "lstm_batches": ("inference_seconds_count", {"model": "lstm_ae"}),
        "iforest_seconds": ("inference_seconds_sum", {"model": "iforest"}),
        "to_score_count": ("reading_to_score_seconds_count", {}),
        "connected": ("broker_connected", {}),
    }
    out = {k: agent.metric(n, **labels) for k, (n, labels) in names.items()}
    for reason in {r for _t, _p, r in BAD_PAYLOADS}:
        out[f"rejected:{reason}"] = agent.metric("messages_rejected", reason=reason)
    return out


@pytest.fixture(scope="module")
def anomaly_run(
    module_broker: MosquittoBroker, models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnomalyRun]:
    workdir = tmp_path_factory.mktemp("agent-anomaly")
    # Short staleness so the carried-forward steps after the burst end soon.
    agent = start_agent(
        workdir, module_broker.port, models, "agent-anomaly", align={"stale_after_seconds": 2.0}
    )
    status = status_topic("agent-anomaly")
    rec = Recorder(module_broker.port).subscribe(f"plant/{PLANT}/#")
    try:
        rec.wait_for("retained online status", lambda r: bool(r.on(status)))
        before = _snapshot(agent)
        ts = step_times(N_STEPS)
        values = normal_series(N_STEPS, seed=3)
        values[FAULT[0] : FAULT[1], 0] += 30.0
        items = telemetry_items(ts, values)
        bad = [(t, p) for t, p, _r in BAD_PAYLOADS]
        rec.publish_all([*items[:BAD_AFTER], *bad, *items[BAD_AFTER:]])
        last_ts = rfc3339(float(ts[-1]))
        rec.wait_for(
            "anomaly raised and cleared, and the last step's score",
            lambda r: (
                len(alerts_of(r, "anomaly")) >= 2
                and any(m.json()["ts"] == last_ts for m in r.on(SCORES))
            ),
        )
        # Scores are QoS 0 and published as steps close: the count received must sit
        # between two readings of steps_scored taken around it.
        low = agent.metric("steps_scored")
        rec.wait_for("scores up to steps_scored", lambda r: len(r.on(SCORES)) >= low, 5)
        n_scores = len(rec.on(SCORES))
        high = agent.metric("steps_scored")
        after = _snapshot(agent)
        run = AnomalyRun(agent, rec, ts, "hm-v1", before, after, (low, high))
        run.after["n_scores"] = n_scores
        run.info = model_set_info(agent)
        run.exit = agent.terminate()
        rec.wait_for(
            "stopped status",
            lambda r: any(m.json()["state"] == "stopped" for m in r.on(status)),
            5,
        )
        run.stopped_status = rec.on(status)
        late = MqttClient(module_broker.port).subscribe(status)
        run.retained_after_exit = late.collect(until=lambda got: bool(got), timeout=5)
        late.close()
        yield run
    finally:
        rec.close()
        agent.kill()


def test_anomaly_alert_has_every_field_and_clears_with_the_same_id(anomaly_run: AnomalyRun) -> None:
    alerts = alerts_of(anomaly_run.rec, "anomaly")
    assert [a["state"] for a in alerts] == ["raised", "cleared"], alerts
    raised, cleared = alerts
    schema = alert_json_schema()
    for a in alerts:
        jsonschema.validate(a, schema)
        assert set(ALERT_FIELDS) <= set(a)
    ts = anomaly_run.ts
    assert raised["plant"] == PLANT and raised["unit"] == UNIT
    assert raised["kind"] == "anomaly"
    assert raised["severity"] in SEVERITIES
    assert raised["agent_id"] == "agent-anomaly"
    assert raised["model_set_version"] == anomaly_run.version
    assert raised["resent"] is False and cleared["resent"] is False
    # on_delay 3: raised at the third anomalous step of the fault, which starts at FAULT[0]
    raised_ts = parse_ts(raised["ts"])
    assert ts[FAULT[0]] <= raised_ts <= ts[FAULT[0] + 5], (raised["ts"], rfc3339(ts[FAULT[0]]))
    assert raised["raised_at"] == raised["ts"]
    assert isinstance(raised["score"], float) and raised["score"] > 0
    assert set(raised["models"]) == {"iforest", "lstm_ae"}
    for verdict in raised["models"].values():
        assert set(verdict) == {"score", "threshold", "decision"}
        assert verdict["decision"] is True and verdict["score"] > verdict["threshold"]
    assert raised["top_sensors"][0]["sensor"] == "steam_temperature"
    errors = [t["error"] for t in raised["top_sensors"]]
    assert errors == sorted(errors, reverse=True)
    # cleared: same episode, after the faulty steps have left the window (off_delay 5)
    assert cleared["alert_id"] == raised["alert_id"]
    assert cleared["raised_at"] == raised["ts"]
    assert cleared["severity"] == raised["severity"]
    assert parse_ts(cleared["ts"]) >= ts[FAULT[1] - 1] + 5
    assert cleared["score"] is not None and cleared["score"] < 0
    assert all(v["decision"] is False for v in cleared["models"].values())


def test_alert_has_mqtt5_user_properties_and_message_expiry(anomaly_run: AnomalyRun) -> None:
    messages = anomaly_run.rec.on(ALERTS)
    assert len(messages) >= 2
    for m in messages:
        doc = m.json()
        props = user_properties(m)
        assert props == {"alert_id": doc["alert_id"], "model_set_version": anomaly_run.version}
        # The broker forwards what is left of the 86400 s expiry (default alert_expiry_seconds).
        expiry = getattr(m.properties, "MessageExpiryInterval", None)
        assert expiry is not None and 86_000 < expiry <= 86_400, expiry
        assert getattr(m.properties, "ContentType", None) == "application/json"


def test_scores_topic_has_one_message_per_scored_step(anomaly_run: AnomalyRun) -> None:
    scores = [m.json() for m in anomaly_run.rec.on(SCORES)]
    schema = scores_json_schema()
    for doc in scores[:3]:
        jsonschema.validate(doc, schema)
    stamps = [d["ts"] for d in scores]
    assert len(stamps) == len(set(stamps)), "a step was published twice"
    ts = anomaly_run.ts
    in_data = [d for d in scores if parse_ts(d["ts"]) <= ts[-1]]
    # Every step with a full window is scored: steps WINDOW-1 .. N_STEPS-1, no more.
    assert [d["ts"] for d in in_data] == [rfc3339(t) for t in ts[WINDOW - 1 :]]
    assert all(d["decision"] is not None and d["models"] for d in in_data)
    low, high = anomaly_run.scored_bounds
    assert low <= anomaly_run.after["n_scores"] <= high
    assert low >= N_STEPS - WINDOW + 1


def test_bad_payloads_are_counted_by_reason_and_scoring_goes_on(anomaly_run: AnomalyRun) -> None:
    expected: dict[str, int] = {}
    for _t, _p, reason in BAD_PAYLOADS:
        expected[reason] = expected.get(reason, 0) + 1
    got = {r: anomaly_run.after[f"rejected:{r}"] for r in expected}
    assert got == expected
    assert anomaly_run.after["received"] == N_STEPS + len(BAD_PAYLOADS)
    # Steps published after the bad payloads were all accepted and scored.
    assert anomaly_run.after["accepted"] == N_STEPS * len(SENSORS)
    later = [
        d
        for d in (m.json() for m in anomaly_run.rec.on(SCORES))
        if anomaly_run.ts[BAD_AFTER] <= parse_ts(d["ts"]) <= anomaly_run.ts[-1]
    ]
    assert len(later) == N_STEPS - BAD_AFTER
    assert "Traceback" not in anomaly_run.agent.log_text()


def test_metrics_show_the_counters_moving(anomaly_run: AnomalyRun) -> None:
    b, a = anomaly_run.before, anomaly_run.after
    assert b["received"] == 0 and b["scored"] == 0 and b["raised"] == 0
    assert b["connected"] == 1 and a["connected"] == 1
    assert a["complete"] >= N_STEPS
    assert a["scored"] >= N_STEPS - WINDOW + 1
    assert a["warmup"] == WINDOW - 1
    assert a["raised"] == 1 and a["cleared"] == 1
    assert a["published"] >= 2
    assert a["iforest_batches"] >= 1 and a["lstm_batches"] >= 1
    assert a["iforest_seconds"] > 0
    assert a["to_score_count"] == a["scored"]
    info = anomaly_run.info
    assert info["version"] == anomaly_run.version
    assert info["window"] == str(WINDOW) and info["sensors"] == str(len(SENSORS))
    assert info["models"] == "iforest,lstm_ae"


def test_sigterm_publishes_stopped_retained_and_exits_zero_within_5s(
    anomaly_run: AnomalyRun,
) -> None:
    rc, seconds = anomaly_run.exit
    assert rc == 0, anomaly_run.agent.log_text()[-2000:]
    assert seconds < 5.0
    states = [m.json()["state"] for m in anomaly_run.stopped_status]
    assert states[0] == "online" and anomaly_run.stopped_status[0].retain
    assert states[-1] == "stopped"
    assert "offline" not in states  # clean DISCONNECT: the Last Will is not sent
    retained = anomaly_run.retained_after_exit
    assert len(retained) == 1 and retained[0].retain
    doc = retained[0].json()
    assert doc["state"] == "stopped"
    assert doc["versions"]["model_set"] == anomaly_run.version
    events = [e.get("event") for e in anomaly_run.agent.log_events()]
    assert events.index("stopping") < events.index("stopped")


# -- scenario 2: per-sensor messages, a limit crossed, a sensor that stops reporting ------

LIMIT_STEPS = (60, 75)  # bearing_temperature at 75 degC, above its HI limit of 72
STALE_STEPS = (110, 130)  # condenser_vacuum sends nothing
STALE_AFTER = 3.0  # seconds a missing value is carried forward


@pytest.fixture(scope="module")
def limit_stale_run(
    module_broker: MosquittoBroker, models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Recorder, np.ndarray, AgentProcess]]:
    workdir = tmp_path_factory.mktemp("agent-limits")
    agent = start_agent(
        workdir,
        module_broker.port,
        models,
        "agent-limits",
        unit_settings=[{"name": UNIT, "limits": {"bearing_temperature": {"hi": 72.0}}}],
        align={"stale_after_seconds": STALE_AFTER},
        topics={"publish_scores": False},
    )
    rec = Recorder(module_broker.port).subscribe(ALERTS)
    try:
        n = 160
        ts = step_times(n)
        values = normal_series(n, seed=5)
        values[LIMIT_STEPS[0] : LIMIT_STEPS[1], SENSORS.index("bearing_temperature")] = 75.0

        def skip(i: int, name: str) -> bool:
            return name == "condenser_vacuum" and STALE_STEPS[0] <= i < STALE_STEPS[1]

        rec.publish_all(sensor_items(ts, values, skip))
        rec.wait_for(
            "limit and sensor_stale raised and cleared",
            lambda r: len(alerts_of(r, "limit")) >= 2 and len(alerts_of(r, "sensor_stale")) >= 2,
        )
        yield rec, ts, agent
    finally:
        rec.close()
        agent.kill()


def test_limit_alert_raises_and_clears(
    limit_stale_run: tuple[Recorder, np.ndarray, AgentProcess],
) -> None:
    rec, ts, agent = limit_stale_run
    alerts = alerts_of(rec, "limit")
    assert [a["state"] for a in alerts[:2]] == ["raised", "cleared"]
    raised, cleared = alerts[:2]
    for a in (raised, cleared):
        jsonschema.validate(a, alert_json_schema())
    # on_delay 3: the third step above the limit raises; off_delay 5: the fifth below clears
    assert raised["ts"] == rfc3339(ts[LIMIT_STEPS[0] + 2])
    assert cleared["ts"] == rfc3339(ts[LIMIT_STEPS[1] + 4])
    assert cleared["alert_id"] == raised["alert_id"]
    assert cleared["raised_at"] == raised["ts"]
    assert raised["limit"] == {
        "sensor": "bearing_temperature",
        "level": "HI",
        "limit": 72.0,
        "value": 75.0,
        "engineering_unit": "degC",
    }
    assert raised["severity"] == "medium"
    assert raised["message"] == "Bearing temperature 75.00 °C above HI 72 °C"
    assert agent.metric("alerts_raised", kind="limit") == 1
    assert agent.metric("alerts_cleared", kind="limit") == 1


def test_sensor_stale_alert_raises_and_clears(
    limit_stale_run: tuple[Recorder, np.ndarray, AgentProcess],
) -> None:
    rec, ts, agent = limit_stale_run
    alerts = alerts_of(rec, "sensor_stale")
    assert [a["state"] for a in alerts[:2]] == ["raised", "cleared"]
    raised, cleared = alerts[:2]
    for a in (raised, cleared):
        jsonschema.validate(a, alert_json_schema())
    # Carried forward while younger than STALE_AFTER, then stale; raised on the 3rd stale
    # step, cleared on the 5th fresh one.
    last_fresh = STALE_STEPS[0] - 1
    first_stale = last_fresh + int(STALE_AFTER)
    assert raised["ts"] == rfc3339(ts[first_stale + 2])
    assert cleared["ts"] == rfc3339(ts[STALE_STEPS[1] + 4])
    assert raised["stale_sensors"] == ["condenser_vacuum"]
    assert raised["score"] is None and raised["models"] == {}  # stale steps are not scored
    assert cleared["alert_id"] == raised["alert_id"]
    assert raised["severity"] == "low"
    assert agent.metric("steps_stale") >= STALE_STEPS[1] - first_stale
    # every per-sensor message was accepted
    n_messages = len(ts) * len(SENSORS) - (STALE_STEPS[1] - STALE_STEPS[0])
    assert agent.metric("readings_accepted") == n_messages


# -- replay agrees with the live agent ------------------------------------------------------


def write_csv(path: Path, ts: np.ndarray, values: np.ndarray, blank: set[tuple[int, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", *SENSORS])
        for i, (t, row) in enumerate(zip(ts, values, strict=True)):
            cells = [
                "" if (i, n) in blank else repr(float(v)) for n, v in zip(SENSORS, row, strict=True)
            ]
            w.writerow([rfc3339(float(t)), *cells])


def test_replay_decides_what_the_live_agent_decided(
    module_broker: MosquittoBroker, models: Path, tmp_path: Path
) -> None:
    n = 170
    ts = step_times(n)
    values = normal_series(n, seed=7)
    values[70:85, SENSORS.index("feedwater_flow")] += 120.0  # +40 sd
    blank = {(140, "load"), (141, "load"), (150, "steam_pressure")}  # carried forward
    data = tmp_path / "incident.csv"
    write_csv(data, ts, values, blank)

    agent = start_agent(tmp_path / "agent", module_broker.port, models, "agent-replay")
    rec = Recorder(module_broker.port).subscribe(ALERTS, SCORES)
    try:
        rec.publish_all(telemetry_items(ts, values, skip=sorted(blank)))
        last = rfc3339(float(ts[-1]))
        rec.wait_for(
            "the last step's score and the alerts",
            lambda r: (
                any(m.json()["ts"] == last for m in r.on(SCORES))
                and len(alerts_of(r, "anomaly")) >= 2
            ),
        )
    finally:
        rec.close()
        assert agent.terminate()[0] == 0

    out = tmp_path / "replay.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "replay", "--config", str(agent.config_path),
         "--input", str(data), "--output", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"replayed {n} rows of unit {UNIT}" in proc.stdout
    assert "alerts: 1 raised, 1 cleared" in proc.stdout
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(lines) == n

    in_range = {rfc3339(float(t)) for t in ts}
    live_steps = {d["ts"]: d for d in (m.json() for m in rec.on(SCORES)) if d["ts"] in in_range}
    replay_steps = {d["ts"]: d for d in lines if d["scored"]}
    assert sorted(live_steps) == sorted(replay_steps)
    assert len(replay_steps) == n - WINDOW + 1
    for stamp, r in replay_steps.items():
        live = live_steps[stamp]
        assert live["decision"] == r["decision"], stamp
        assert math.isclose(live["score"], r["score"], rel_tol=1e-6, abs_tol=1e-9), stamp
        assert {k: v["decision"] for k, v in live["models"].items()} == {
            k: v["decision"] for k, v in r["models"].items()
        }
        assert live["alarms"] == r["alarms"], stamp
    assert any(r["decision"] for r in replay_steps.values())
    assert {r["how"] for r in lines} == {"complete", "deadline"}  # the blanks closed late

    def transitions(alerts: list[dict[str, Any]]) -> list[tuple[str, ...]]:
        return [(a["kind"], a["state"], a["ts"], a["raised_at"], a["alert_id"]) for a in alerts]

    live_alerts = [m.json() for m in rec.on(ALERTS)]
    live_alerts = [a for a in live_alerts if a["ts"] in in_range]
    replay_alerts = [a for line in lines for a in line["alerts"]]
    assert transitions(live_alerts) == transitions(replay_alerts)
    assert [a["state"] for a in replay_alerts] == ["raised", "cleared"]


# -- SIGHUP: reload a new model set; refuse a broken one ------------------------------------


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def retained_status(port: int, agent_id: str) -> dict[str, Any]:
    client = MqttClient(port).subscribe(status_topic(agent_id))
    try:
        got = client.collect(until=lambda g: bool(g), timeout=5)
    finally:
        client.close()
    assert got and got[0].retain
    doc: dict[str, Any] = got[0].json()
    return doc


def test_sighup_reloads_a_good_model_set_and_refuses_a_bad_one(
    module_broker: MosquittoBroker, models: Path, tmp_path: Path
) -> None:
    v2 = build_model_set(tmp_path / "v2", window=WINDOW, version="hm-v2", lstm_threshold=1.7)
    bad = tmp_path / "v3"
    shutil.copytree(v2, bad)
    manifest = (bad / MANIFEST_NAME).read_text(encoding="utf-8")
    (bad / MANIFEST_NAME).write_text(manifest.replace("hm-v2", "hm-v3"), encoding="utf-8")
    flip_byte(bad / "lstm_ae.onnx")

    n = 150
    ts = step_times(n)
    items = telemetry_items(ts, normal_series(n, seed=11))
    # Long lateness: the pauses between bursts must not close steps ahead of their data.
    agent = start_agent(
        tmp_path / "agent",
        module_broker.port,
        models,
        "agent-sighup",
        align={"lateness_seconds": 60.0},
    )

    def status_model_set() -> str:
        version: str = retained_status(module_broker.port, "agent-sighup")["versions"]["model_set"]
        return version

    rec = Recorder(module_broker.port).subscribe(SCORES)
    try:
        rec.publish_all(items[:60])
        agent.wait_for_metric("steps_scored", 60 - WINDOW + 1)
        assert model_set_info(agent)["version"] == "hm-v1"
        assert status_model_set() == "hm-v1"

        # A good set with another version: the config now points at it.
        agent.config["models"]["dir"] = str(v2)
        agent.write_config()
        agent.signal(signal.SIGHUP)
        agent.wait_for_event("reloaded", model_set="hm-v2")
        assert agent.metric("reloads", result="ok") == 1
        assert model_set_info(agent)["version"] == "hm-v2"
        assert status_model_set() == "hm-v2"
        rec.publish_all(items[60:100])
        rec.wait_for(
            "scores of the new set", lambda r: r.on(SCORES)[-1].json()["ts"] == rfc3339(ts[99])
        )
        by_version = {m.json()["ts"]: m.json()["model_set_version"] for m in rec.on(SCORES)}
        assert by_version[rfc3339(ts[59])] == "hm-v1"
        assert by_version[rfc3339(ts[99])] == "hm-v2"
        assert rec.on(SCORES)[-1].json()["models"]["lstm_ae"]["threshold"] == 1.7

        # A tampered set: refused with the reason, the running set keeps scoring.
        scored = agent.metric("steps_scored")
        agent.config["models"]["dir"] = str(bad)
        agent.write_config()
        agent.signal(signal.SIGHUP)
        refused = agent.wait_for_event("reload refused, keeping the running model set")
        assert "checksum mismatch" in refused["error"] and "lstm_ae" in refused["error"]
        assert agent.metric("reloads", result="refused") == 1
        rec.publish_all(items[100:])
        agent.wait_for_metric("steps_scored", scored + 50)
        rec.wait_for("last score", lambda r: r.on(SCORES)[-1].json()["ts"] == rfc3339(ts[-1]))
        assert rec.on(SCORES)[-1].json()["model_set_version"] == "hm-v2"
        assert model_set_info(agent)["version"] == "hm-v2"
        assert status_model_set() == "hm-v2"
        assert agent.proc is not None and agent.proc.poll() is None
    finally:
        rec.close()
        rc, _ = agent.terminate()
    assert rc == 0


# -- the shipped model set on simulated plant data ------------------------------------------

LEAD_IN = 300


@pytest.mark.skipif(
    not (SHIPPED_MODELS / MANIFEST_NAME).is_file(),
    reason="models/ holds no model set yet (run `make models`)",
)
def test_shipped_models_alert_on_a_bearing_fault_and_clear_after_it(
    module_broker: MosquittoBroker, tmp_path: Path
) -> None:
    manifest = orjson.loads((SHIPPED_MODELS / MANIFEST_NAME).read_bytes())
    window = int(manifest["window"])
    start, end = window + 90, window + 170  # fault steps; 90 steps of recovery follow
    n = window + 260
    # The same data every run: the simulated day (3600 s) starts at a whole hour, and the
    # simulator's own start-up (LEAD_IN steps) is not published, as in a running plant.
    first = int(time.time()) - n - 5
    first -= first % 3600
    ts, values, labels = simulated_steps(
        LEAD_IN + n,
        [FaultEvent("bearing_degradation", LEAD_IN + start, LEAD_IN + end, magnitude=2.0)],
        seed=1,
        start=float(first - LEAD_IN),
    )
    ts, values, labels = ts[LEAD_IN:], values[LEAD_IN:], labels[LEAD_IN:]
    assert labels[start:end].all() and not labels[:start].any()

    agent = start_agent(
        tmp_path / "agent",
        module_broker.port,
        SHIPPED_MODELS,
        "agent-shipped",
        align={"max_age_seconds": 3 * 3600.0},  # the data starts up to an hour back
    )
    rec = Recorder(module_broker.port).subscribe(ALERTS)
    try:
        rec.publish_all(telemetry_items(ts, values))
        rec.wait_for("anomaly raised and cleared", lambda r: len(alerts_of(r, "anomaly")) >= 2)
        assert agent.metric("steps_scored") >= n - window + 1
    finally:
        rec.close()
        assert agent.terminate()[0] == 0
    alerts = alerts_of(rec, "anomaly")
    assert [a["state"] for a in alerts] == ["raised", "cleared"], alerts
    raised, cleared = alerts
    for a in alerts:
        jsonschema.validate(a, alert_json_schema())
    # No false alarm on the healthy part; raised soon after the fault starts.
    assert ts[start] <= parse_ts(raised["ts"]) <= ts[start + 20]
    assert raised["model_set_version"] == manifest["model_set_version"]
    assert raised["top_sensors"][0]["sensor"] in {"turbine_vibration", "bearing_temperature"}
    assert any(v["decision"] for v in raised["models"].values())
    # Cleared once the faulty steps have left the window.
    assert cleared["alert_id"] == raised["alert_id"]
    assert parse_ts(cleared["ts"]) >= ts[end - 1]
