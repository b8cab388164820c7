"""Never discard evidence: unusual readings are scored, impossible ones raise bad quality.

Through the real engine on real (handmade) ONNX models: an unusual reading (outside what
training saw) is the anomaly an operator most needs to see, so it must be scored and named;
an impossible one (outside the instrument range, or not a number) is counted, logged and
turned into a ``bad_quality`` alarm for that sensor — never a silent stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest
from handmade_models import build_model_set, normal_series

from edge_agent.config import AgentSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alerts import Alert, alert_json_schema
from edge_agent.pipeline.engine import Engine, StepOutcome
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, SensorSpec

WINDOW = 20
T0 = 1_714_564_800.0
NAMES = [s.name for s in THERMAL_UNIT_SENSORS]
ALERT_SCHEMA = jsonschema.Draft202012Validator(alert_json_schema())
ENVELOPE = {"steam_temperature": (535.0, 545.0)}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append((event, kw))

    info = warning = debug


class Run:
    def __init__(self, model_set: ModelSet, **overrides: Any) -> None:
        base: dict[str, Any] = {
            "agent_id": "t",
            "units": [{"name": "u1"}],
            "align": {"lateness_seconds": 2.0, "stale_after_seconds": 5.0},
            "alarm": {"on_delay": 3, "off_delay": 4},
        }
        base.update(overrides)
        self.metrics = Metrics()
        self.log = Recorder()
        self.engine = Engine(AgentSettings(**base), model_set, self.metrics, self.log)
        self.steps: list[StepOutcome] = []
        self.alerts: list[Alert] = []
        self.i = 0

    def send(self, values: dict[str, float], ts: float) -> None:
        payload = orjson.dumps({"ts": ts, "values": values})
        self.engine.handle_message("plant/plant1/u1/telemetry", payload, ts + 0.01)

    def feed(self, rows: np.ndarray, change: dict[str, float] | None = None) -> None:
        for row in rows:
            ts = T0 + self.i
            values = dict(zip(NAMES, row.tolist(), strict=True))
            values.update(change or {})
            self.send(values, ts)
            result = self.engine.tick(ts + 0.05)
            self.steps += result.steps
            self.alerts += result.alerts
            self.i += 1

    def count(self, name: str, **labels: str) -> float:
        self.engine.flush_metrics()
        return self.metrics.registry.get_sample_value(f"edge_agent_{name}", labels) or 0.0


@pytest.fixture(scope="module")
def model_set(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    d = build_model_set(tmp_path_factory.mktemp("m"), window=WINDOW, envelopes=ENVELOPE)
    return ModelSet.load(d)


def test_reading_outside_the_training_envelope_is_scored_and_named(model_set: ModelSet) -> None:
    run = Run(model_set)
    run.feed(normal_series(40, seed=3))
    # 600 degC: far outside what training saw (535-545), well inside the instrument's 0-700.
    run.feed(normal_series(10, seed=4), change={"steam_temperature": 600.0})
    unusual = run.steps[40:]
    assert all(s.scored for s in unusual), [s.not_scored for s in unusual]
    assert run.count("readings_rejected_total", reason="out_of_range") == 0
    assert run.count("messages_rejected_total", reason="out_of_range") == 0
    assert all(s.decision for s in unusual)
    [raised] = [a for a in run.alerts if a.kind == "anomaly" and a.state == "raised"]
    doc = raised.to_dict()
    ALERT_SCHEMA.validate(doc)
    assert doc["outside_envelope"] == [
        {"sensor": "steam_temperature", "value": 600.0, "lo": 535.0, "hi": 545.0}
    ]
    assert raised.score is not None and raised.score >= 0


def test_impossible_reading_is_counted_logged_and_raises_bad_quality(model_set: ModelSet) -> None:
    run = Run(model_set)
    run.feed(normal_series(40, seed=5))
    run.feed(normal_series(6, seed=6), change={"steam_pressure": 999.0})  # instrument: 0-250
    assert run.count("readings_rejected_total", reason="out_of_range") == 6
    assert any(e == "readings_rejected" for e, _ in run.log.events)
    bad = [a for a in run.alerts if a.kind == "bad_quality"]
    assert [(a.state, a.sensor, a.severity) for a in bad] == [
        ("raised", "steam_pressure", "medium")
    ]
    ALERT_SCHEMA.validate(bad[0].to_dict())
    assert bad[0].ts == T0 + 40 + 2  # on_delay 3: the third bad step raises
    # valid readings again: cleared after off_delay good steps, same episode id
    run.feed(normal_series(8, seed=7))
    assert [s.bad_sensors for s in run.steps[40:46]] == [("steam_pressure",)] * 6
    # carried forward while fresh (stale_after 5 s), still scored; then stale
    assert [s.scored for s in run.steps[40:46]] == [True] * 4 + [False] * 2
    bad = [a for a in run.alerts if a.kind == "bad_quality"]
    assert [a.state for a in bad] == ["raised", "cleared"]
    assert bad[0].alert_id == bad[1].alert_id
    assert run.steps[-1].alarms["bad_quality"] is False


def test_bad_quality_stays_while_the_sensor_only_sends_impossible_values(
    model_set: ModelSet,
) -> None:
    run = Run(model_set)
    run.feed(normal_series(30, seed=8))
    rows = normal_series(12, seed=9)
    for k, row in enumerate(rows):
        ts = T0 + run.i
        values = dict(zip(NAMES, row.tolist(), strict=True))
        if k % 3 == 0:
            values["load"] = -50.0  # impossible every third step, missing in between
        else:
            values.pop("load")
        run.send(values, ts)
        result = run.engine.tick(ts + 0.05)
        run.steps += result.steps
        run.alerts += result.alerts
        run.i += 1
    # between the impossible readings the sensor is carried (or stale): still bad quality
    assert all(s.bad_sensors == ("load",) for s in run.steps[30:])
    assert [a.state for a in run.alerts if a.kind == "bad_quality"] == ["raised"]


def test_not_a_number_on_a_sensor_topic_raises_bad_quality(model_set: ModelSet) -> None:
    run = Run(model_set)
    run.feed(normal_series(30, seed=10))
    rows = normal_series(5, seed=11)
    for row in rows:
        ts = T0 + run.i
        for name, v in zip(NAMES, row.tolist(), strict=True):
            payload = (
                b'{"ts": %f, "value": NaN}' % ts
                if name == "feedwater_flow"
                else (orjson.dumps({"ts": ts, "value": v}))
            )
            run.engine.handle_message(f"plant/plant1/u1/sensors/{name}", payload, ts + 0.01)
        result = run.engine.tick(ts + 3)
        run.steps += result.steps
        run.alerts += result.alerts
        run.i += 1
    assert run.count("messages_rejected_total", reason="not_finite") == 5
    assert [(a.state, a.sensor) for a in run.alerts if a.kind == "bad_quality"] == [
        ("raised", "feedwater_flow")
    ]


def test_ranges_derived_from_data_never_reject(tmp_path: Path) -> None:
    """A foreign sensor without a stated instrument range accepts any finite value."""
    sensors = [SensorSpec("flow", "l/min"), SensorSpec("pressure", "bar")]
    d = build_model_set(
        tmp_path, sensors, window=WINDOW, normal={"flow": (30, 1), "pressure": (2, 0.1)}
    )
    run = Run(ModelSet.load(d))
    topic = "plant/plant1/u1/telemetry"
    for i in range(WINDOW + 5):
        ts = T0 + i
        flow = 30.0 if i < WINDOW else 1e9
        run.engine.handle_message(
            topic, orjson.dumps({"ts": ts, "values": {"flow": flow, "pressure": 2.0}}), ts
        )
        run.steps += run.engine.tick(ts + 0.05).steps
    assert run.count("readings_rejected_total", reason="out_of_range") == 0
    assert all(s.scored and s.decision for s in run.steps[WINDOW:])


def test_configured_instrument_range_makes_a_reading_impossible(model_set: ModelSet) -> None:
    run = Run(model_set, ingest={"instrument_ranges": {"bearing_temperature": {"hi": 120}}})
    run.feed(normal_series(30, seed=12))
    run.feed(normal_series(4, seed=13), change={"bearing_temperature": 130.0})  # spec: 0-150
    run.feed(normal_series(3, seed=16))
    assert run.count("readings_rejected_total", reason="out_of_range") == 4
    assert [a.sensor for a in run.alerts if a.kind == "bad_quality"] == ["bearing_temperature"]


def test_decision_and_score_agree_on_every_scored_step(model_set: ModelSet) -> None:
    run = Run(model_set)
    run.feed(normal_series(60, seed=14))
    run.feed(normal_series(20, seed=15), change={"turbine_vibration": 4.0})
    scored = [s for s in run.steps if s.scored]
    assert any(s.decision for s in scored) and not all(s.decision for s in scored)
    assert all(s.decision == (s.score is not None and s.score >= 0) for s in scored)
