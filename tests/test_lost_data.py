"""Nothing dropped silently: every rejection, late or duplicate reading and unknown unit
gives a rate-limited WARNING with a count and an example topic (unit tests on the limiter,
engine tests on the log lines, and the real agent at its default log level)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from handmade_models import build_model_set, normal_series

from edge_agent.config import AgentSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.engine import Engine
from edge_agent.pipeline.lost_data import MAX_KEYS, LostDataWarnings
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS
from harness.agent import AgentProcess, agent_config
from harness.mqtt_client import MqttClient
from harness.telemetry import PLANT, telemetry_payload

NAMES = [s.name for s in THERMAL_UNIT_SENSORS]
T0 = 1_795_946_400.0


class Capture:
    """A structlog-shaped logger that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        self.lines.append(("debug", event, kw))

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self.lines.append(("info", event, kw))

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self.lines.append(("warning", event, kw))

    def warnings(self, event: str | None = None) -> list[dict[str, Any]]:
        return [
            {"event": e, **kw}
            for level, e, kw in self.lines
            if level == "warning" and (event is None or e == event)
        ]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the limiter -----------------------------------------------------------------------------


def test_first_occurrence_logs_at_once_then_one_line_per_interval_with_counts() -> None:
    log, clock = Capture(), Clock()
    lost = LostDataWarnings(log, interval=60.0, clock=clock)
    lost.rejected("bad_json", "plant/p1/u1/telemetry", "u1")
    [first] = log.warnings()
    assert first["reason"] == "bad_json" and first["unit"] == "u1"
    assert (first["count"], first["total"]) == (1, 1)
    assert first["example_topic"] == "plant/p1/u1/telemetry"
    for i in range(99):
        clock.now += 0.5
        lost.rejected("bad_json", f"plant/p1/u1/sensors/s{i}", "u1")
    lost.flush()
    assert len(log.warnings()) == 1  # 49.5 s later: still inside the interval
    clock.now += 11
    lost.flush()
    second = log.warnings()[1]
    assert (second["count"], second["total"]) == (99, 100)
    assert second["example_topic"] == "plant/p1/u1/sensors/s0"  # first of the period
    lost.flush()
    assert len(log.warnings()) == 2  # nothing new: no empty line


def test_reasons_and_units_are_reported_separately() -> None:
    log, clock = Capture(), Clock()
    lost = LostDataWarnings(log, clock=clock)
    lost.rejected("bad_json", "a", "u1")
    lost.rejected("bad_json", "b", "u2")
    lost.rejected("too_old", "c", "u1")
    lost.readings_lost("late", "u1", "d", 8)
    lost.readings_lost("duplicate", "u1", "e", 2)
    seen = [(w["event"], w.get("reason"), w["unit"], w["count"]) for w in log.warnings()]
    assert seen == [
        ("messages_rejected", "bad_json", "u1", 1),
        ("messages_rejected", "bad_json", "u2", 1),
        ("messages_rejected", "too_old", "u1", 1),
        ("readings_late", None, "u1", 8),
        ("readings_duplicate", None, "u1", 2),
    ]
    assert "device clock" in log.warnings()[2]["hint"]


def test_junk_unit_names_cannot_grow_the_table_without_bound() -> None:
    log, clock = Capture(), Clock()
    lost = LostDataWarnings(log, clock=clock)
    for i in range(MAX_KEYS + 500):
        lost.rejected("unknown_unit", f"plant/p1/junk{i}/telemetry", f"junk{i}")
    assert len(lost._entries) == MAX_KEYS + 1  # + one shared key for the rest
    assert log.warnings()[-1]["unit"] == "(other units)"
    assert len(log.warnings()) == MAX_KEYS + 1  # the shared key logs once per interval


# -- through the engine ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_set(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    return ModelSet.load(build_model_set(tmp_path_factory.mktemp("models"), window=30))


def make_engine(model_set: ModelSet, **overrides: Any) -> tuple[Engine, Capture]:
    log = Capture()
    settings = AgentSettings(
        **{"agent_id": "a", "plant": "p1", "units": [{"name": "unit1"}], **overrides}
    )
    return Engine(settings, model_set, Metrics(), log), log


def snapshot(ts: float, row: list[float]) -> bytes:
    return orjson.dumps({"ts": ts, "values": dict(zip(NAMES, row, strict=True))})


def test_an_unconfigured_unit_says_how_to_add_it(model_set: ModelSet) -> None:
    e, log = make_engine(model_set)
    row = normal_series(1, seed=1)[0].tolist()
    for i in range(5):
        e.handle_message("plant/p1/unit2/telemetry", snapshot(T0 + i, row), T0 + i)
    [w] = log.warnings("messages_rejected")
    assert w["reason"] == "unknown_unit" and w["unit"] == "unit2" and w["count"] == 1
    assert "- name: unit2" in w["hint"] and "ingest.auto_discover_units: true" in w["hint"]
    assert w["example_topic"] == "plant/p1/unit2/telemetry"


def test_late_and_duplicate_readings_are_logged_per_unit(model_set: ModelSet) -> None:
    e, log = make_engine(model_set)
    rows = normal_series(40, seed=2).tolist()
    topic = "plant/p1/unit1/telemetry"
    for i in range(20, 40):  # the present first ...
        e.handle_message(topic, snapshot(T0 + i, rows[i]), T0 + i)
        e.tick(T0 + i + 0.01)
    for i in range(10):  # ... then back-dated history: every reading is late
        e.handle_message(topic, snapshot(T0 + i, rows[i]), T0 + 40)
    e.handle_message(topic, snapshot(T0 + 39, rows[39]), T0 + 40)  # a redelivery
    [late] = log.warnings("readings_late")
    assert (late["unit"], late["count"], late["example_topic"]) == ("unit1", 8, topic)
    assert "lateness_seconds" in late["hint"]
    [dup] = log.warnings("readings_duplicate")
    assert (dup["unit"], dup["count"]) == ("unit1", 8)


def test_every_rejection_reason_of_a_message_warns(model_set: ModelSet) -> None:
    e, log = make_engine(model_set)
    now = time.time()
    cases = {
        "bad_json": ("plant/p1/unit1/telemetry", b"{nope"),
        "bad_topic": ("elsewhere/x", b"1"),
        "unknown_sensor": ("plant/p1/unit1/sensors/nosuch", b"1"),
        "too_old": ("plant/p1/unit1/sensors/load", orjson.dumps({"ts": now - 7200, "value": 1})),
        "not_finite": ("plant/p1/unit1/sensors/load", b'{"value": 1e999}'),
    }
    for topic, payload in cases.values():
        e.handle_message(topic, payload, now)
    reasons = {w["reason"]: w for w in log.warnings("messages_rejected")}
    assert set(reasons) == set(cases)
    assert reasons["bad_topic"].get("unit") is None
    assert reasons["too_old"]["unit"] == "unit1"


# -- the real agent, default log level -------------------------------------------------------


def test_the_agent_logs_unknown_units_and_late_readings_at_info_level(
    tmp_path: Path, mosquitto: Any
) -> None:
    models = build_model_set(tmp_path / "models", window=30)
    cfg = agent_config(tmp_path, mosquitto.port, models)
    assert cfg["logging"]["level"] == "INFO"
    with AgentProcess(tmp_path / "agent", cfg).start() as agent:
        client = MqttClient(mosquitto.port, "plant")
        rows = normal_series(30, seed=3)
        t0 = float(int(time.time()) - 40)
        for i in range(20, 30):
            client.publish(f"plant/{PLANT}/unit1/telemetry", telemetry_payload(t0 + i, rows[i]))
        for i in range(5):  # back-dated: late
            client.publish(f"plant/{PLANT}/unit1/telemetry", telemetry_payload(t0 + i, rows[i]))
        client.publish(f"plant/{PLANT}/unit7/telemetry", telemetry_payload(t0 + 29, rows[29]))
        client.close()
        unknown = agent.wait_for_event("messages_rejected", reason="unknown_unit", timeout=10)
        late = agent.wait_for_event("readings_late", timeout=10)
    assert unknown["level"] == "warning" and unknown["unit"] == "unit7"
    assert "- name: unit7" in unknown["hint"]
    assert late["level"] == "warning" and late["unit"] == "unit1" and late["count"] >= 8
    assert late["example_topic"] == f"plant/{PLANT}/unit1/telemetry"
