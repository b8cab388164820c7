"""The engine end to end on real (handmade) ONNX models: streams in, scores and alerts out."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest
from handmade_models import build_model_set, normal_series
from numpy.typing import NDArray

from edge_agent.config import AgentSettings, ConfigError
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alerts import Alert, alert_json_schema, rfc3339, scores_json_schema
from edge_agent.pipeline.engine import Engine, StepOutcome
from edge_agent.pipeline.manifest import ManifestError
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS

WINDOW = 30
T0 = 1_714_564_800.0
NAMES = [s.name for s in THERMAL_UNIT_SENSORS]
ALERT_SCHEMA = jsonschema.Draft202012Validator(alert_json_schema())
SCORES_SCHEMA = jsonschema.Draft202012Validator(scores_json_schema())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW)


@pytest.fixture(scope="module")
def model_set(model_dir: Path) -> ModelSet:
    return ModelSet.load(model_dir)


class Quiet:
    def debug(self, event: str, *args: Any, **kw: Any) -> None: ...

    def info(self, event: str, *args: Any, **kw: Any) -> None: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> None: ...


def make_settings(**overrides: Any) -> AgentSettings:
    base: dict[str, Any] = {
        "agent_id": "agent-t",
        "units": [{"name": "u1"}],
        "align": {"lateness_seconds": 2.0, "stale_after_seconds": 5.0},
        "alarm": {"on_delay": 3, "off_delay": 5},
    }
    base.update(overrides)
    return AgentSettings(**base)


class Plant:
    """Drives an engine the way the server does: messages as they arrive, a tick after each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.steps: list[StepOutcome] = []
        self.alerts: list[Alert] = []

    def send(self, unit: str, ts: float, values: dict[str, float]) -> None:
        payload = orjson.dumps({"ts": ts, "values": values})
        self.engine.handle_message(f"plant/plant1/{unit}/telemetry", payload, ts + 0.01)

    def tick(self, now: float) -> None:
        result = self.engine.tick(now)
        self.steps.extend(result.steps)
        self.alerts.extend(result.alerts)

    def stream(
        self,
        series: NDArray[np.float64],
        *,
        unit: str = "u1",
        t0: float = T0,
        omit: Callable[[int], list[str]] = lambda i: [],
        between: Callable[[int, float], None] | None = None,
    ) -> None:
        for i, row in enumerate(series):
            ts = t0 + i
            skip = omit(i)
            values = dict(zip(NAMES, row.tolist(), strict=True))
            self.send(unit, ts, {n: v for n, v in values.items() if n not in skip})
            if between is not None:
                between(i, ts)
            self.tick(ts + 0.05)

    def flush(self, last_ts: float) -> None:
        self.tick(last_ts + 1 + self.engine.settings.align.lateness_seconds)

    def step(self, ts: float, unit: str = "u1") -> StepOutcome:
        [s] = [s for s in self.steps if s.ts == ts and s.unit == unit]
        return s


def engine(model_set: ModelSet, **overrides: Any) -> tuple[Engine, Metrics]:
    metrics = Metrics()
    return Engine(make_settings(**overrides), model_set, metrics, Quiet()), metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"edge_agent_{name}", labels) or 0.0


def test_normal_operation_scores_every_step_and_raises_nothing(model_set: ModelSet) -> None:
    e, metrics = engine(model_set)
    plant = Plant(e)
    plant.stream(normal_series(200, seed=1))
    assert plant.alerts == []
    assert [s.ts for s in plant.steps] == [T0 + i for i in range(200)]
    assert [s.not_scored for s in plant.steps[: WINDOW - 1]] == ["warmup"] * (WINDOW - 1)
    scored = plant.steps[WINDOW - 1 :]
    assert all(s.scored and s.decision is False for s in scored)
    assert all(
        s.alarms == {"anomaly": False, "limit": False, "sensor_stale": False, "bad_quality": False}
        for s in scored
    )
    assert all(set(s.models) == {"iforest", "lstm_ae"} for s in scored)
    assert all(s.score is not None and s.score < 0 for s in scored)
    assert sample(metrics, "steps_scored_total") == 200 - WINDOW + 1
    assert sample(metrics, "steps_dropped_total", reason="warmup") == WINDOW - 1
    assert sample(metrics, "messages_received_total") == 200
    assert sample(metrics, "readings_accepted_total") == 200 * 8
    assert sample(metrics, "steps_closed_total", how="complete") == 200
    assert e.units_tracked == 1 and e.unit_names == ["u1"]
    for s in scored[:5]:
        SCORES_SCHEMA.validate(orjson.loads(e.scores_payload(s)))


def test_injected_fault_raises_an_anomaly_with_all_fields_then_clears(
    model_set: ModelSet,
) -> None:
    e, metrics = engine(model_set)
    plant = Plant(e)
    series = normal_series(220, seed=2)
    series[100:120, 0] += 25.0  # steam_temperature: +25 standard deviations for 20 steps
    plant.stream(series)
    anomaly = [a for a in plant.alerts if a.kind == "anomaly"]
    assert [a.state for a in anomaly] == ["raised", "cleared"]
    raised, cleared = anomaly
    # anomalous from step 100 on: raised on the third anomalous step (on_delay 3)
    assert raised.ts == raised.raised_at == T0 + 102
    assert raised.alert_id == cleared.alert_id
    assert (raised.plant, raised.unit, raised.agent_id) == ("plant1", "u1", "agent-t")
    assert raised.model_set_version == model_set.version
    assert raised.severity == "high" and raised.score is not None and raised.score >= 0
    assert set(raised.models) == {"iforest", "lstm_ae"}
    assert all(v.decision and v.score > v.threshold for v in raised.models.values())
    assert raised.models["iforest"].threshold == 6.0
    assert raised.top_sensors[0].sensor == "steam_temperature"
    assert len(raised.top_sensors) == 3
    assert raised.limit is None and list(raised.stale_sensors) == [] and not raised.resent
    assert raised.arrival == pytest.approx(T0 + 102.01)
    # the last window holding a fault step ends at step 148; 5 normal decisions later: clear
    assert cleared.ts == T0 + 153 and cleared.raised_at == T0 + 102
    assert cleared.severity == "high" and cleared.score is not None and cleared.score < 0
    assert plant.step(T0 + 102).alerts == [raised]
    assert plant.step(T0 + 102).alarms["anomaly"] and not plant.step(T0 + 153).alarms["anomaly"]
    for alert in anomaly:
        doc = orjson.loads(alert.to_json())
        ALERT_SCHEMA.validate(doc)
        back = Alert.from_json(alert.to_json())
        assert back is not None and back.to_dict() == doc
    assert sample(metrics, "alerts_raised_total", kind="anomaly") == 1
    assert sample(metrics, "alerts_cleared_total", kind="anomaly") == 1


def test_one_limit_alarm_per_sensor_moves_hi_hihi_hi_and_clears(model_set: ModelSet) -> None:
    """ISA-18.2 precedence: one alarm (one alert_id) per sensor at its most severe level;
    works before the window is full (no scores needed)."""
    limits = {"bearing_temperature": {"hi": 72.0, "hihi": 75.0}}
    e, metrics = engine(model_set, units=[{"name": "u1", "limits": limits}])
    plant = Plant(e)
    series = normal_series(45, seed=3)
    series[5:15, 7] = 73.5  # above HI
    series[15:20, 7] = 76.0  # above HIHI (and HI)
    series[20:30, 7] = 73.0  # back to HI only
    plant.stream(series)
    # (the anomaly alarm raises too once the window is full; only limits matter here)
    alerts = [a for a in plant.alerts if a.kind == "limit"]
    seen = [(a.state, a.limit.level if a.limit else None, a.severity, a.ts - T0) for a in alerts]
    assert seen == [
        ("raised", "HI", "medium", 7.0),  # on_delay 3
        ("raised", "HIHI", "high", 17.0),  # escalation after on_delay steps above HIHI
        ("raised", "HI", "medium", 24.0),  # step down after off_delay (5) steps below HIHI
        ("cleared", "HI", "medium", 34.0),  # off_delay normal steps
    ]
    assert len({a.alert_id for a in alerts}) == 1
    assert {a.raised_at - T0 for a in alerts} == {7.0}
    hi, hihi, back, cleared = alerts
    assert hi.limit is not None and hihi.limit is not None and back.limit is not None
    assert (hi.limit.sensor, hi.limit.limit, hi.limit.engineering_unit) == (
        "bearing_temperature",
        72.0,
        "degC",
    )
    assert hi.limit.value == pytest.approx(73.5)
    assert (hihi.limit.limit, hihi.limit.value) == (75.0, pytest.approx(76.0))
    assert hi.message == "Bearing temperature 73.50 °C above HI 72 °C"
    assert hihi.message == "Bearing temperature 76.00 °C above HIHI 75 °C"
    assert back.message == "Bearing temperature 73.00 °C above HI 72 °C"
    assert cleared.message.startswith("Bearing temperature ") and "back below HI 72 °C" in (
        cleared.message
    )
    assert hi.score is None and dict(hi.models) == {}  # still warming up
    assert plant.step(T0 + 10).alarms["limit"] and not plant.step(T0 + 34).alarms["limit"]
    # one episode: raised once and cleared once, whatever its level changes
    assert sample(metrics, "alerts_raised_total", kind="limit") == 1
    assert sample(metrics, "alerts_cleared_total", kind="limit") == 1
    for a in alerts:
        doc = orjson.loads(a.to_json())
        ALERT_SCHEMA.validate(doc)
        assert Alert.from_json(a.to_json()) == a


def test_level_changes_are_logged_as_such(model_set: ModelSet) -> None:
    class Capture(Quiet):
        def __init__(self) -> None:
            self.events: list[tuple[str, dict[str, Any]]] = []

        def info(self, event: str, *args: Any, **kw: Any) -> None:
            self.events.append((event, kw))

    log = Capture()
    limits = {"bearing_temperature": {"hi": 72.0, "hihi": 75.0}}
    settings = make_settings(units=[{"name": "u1", "limits": limits}])
    plant = Plant(Engine(settings, model_set, Metrics(), log))
    series = normal_series(30, seed=3)
    series[5:20, 7] = 73.5
    series[10:20, 7] = 76.0
    plant.stream(series)
    limit_events = [(e, kw["level"]) for e, kw in log.events if kw.get("kind") == "limit"]
    assert limit_events == [
        ("alert_raised", "HI"),
        ("alert_level_changed", "HIHI"),
        ("alert_cleared", "HIHI"),
    ]


def test_a_short_dip_below_hihi_does_not_step_the_alarm_down(model_set: ModelSet) -> None:
    limits = {"bearing_temperature": {"hi": 72.0, "hihi": 75.0}}
    e, _ = engine(model_set, units=[{"name": "u1", "limits": limits}])
    plant = Plant(e)
    series = normal_series(40, seed=3)
    series[5:25, 7] = 76.0
    series[12:15, 7] = 73.0  # 3 steps in HI: fewer than off_delay (5)
    plant.stream(series)
    alerts = [a for a in plant.alerts if a.kind == "limit"]
    assert [(a.state, a.limit.level if a.limit else None) for a in alerts] == [
        ("raised", "HIHI"),
        ("cleared", "HIHI"),
    ]


def test_low_limits_read_below_and_back_above(model_set: ModelSet) -> None:
    limits = {"load": {"lo": 300.0, "lolo": 200.0}}
    e, _ = engine(model_set, units=[{"name": "u1", "limits": limits}])
    plant = Plant(e)
    series = normal_series(30, seed=4)
    series[3:10, 4] = 150.0
    plant.stream(series)
    alerts = [a for a in plant.alerts if a.kind == "limit"]
    assert alerts[0].message == "Load 150.0 MW below LOLO 200 MW"
    assert alerts[-1].state == "cleared" and "back above LOLO 200 MW" in alerts[-1].message


def test_limits_on_unknown_sensors_are_a_config_error(model_set: ModelSet) -> None:
    with pytest.raises(ConfigError, match="steam_temp"):
        engine(model_set, units=[{"name": "u1", "limits": {"steam_temp": {"hi": 1.0}}}])


def test_a_silent_sensor_makes_steps_stale_and_raises_sensor_stale(model_set: ModelSet) -> None:
    e, metrics = engine(model_set)
    plant = Plant(e)
    series = normal_series(140, seed=4)
    plant.stream(series, omit=lambda i: ["load"] if 50 <= i < 70 else [])
    plant.flush(T0 + 139)
    assert [s.ts for s in plant.steps] == [T0 + i for i in range(140)]
    # load carried forward while younger than 5 s (steps 50..53), stale from 54 to 69
    assert [plant.step(T0 + i).carried for i in (50, 53)] == [("load",), ("load",)]
    stale = [s for s in plant.steps if s.stale]
    assert [s.ts - T0 for s in stale] == list(range(54, 70))
    assert all(s.not_scored == "stale" and s.stale_sensors == ("load",) for s in stale)
    assert sample(metrics, "steps_stale_total") == 16
    alerts = [(a.kind, a.state, a.ts - T0, tuple(a.stale_sensors)) for a in plant.alerts]
    assert alerts == [
        ("sensor_stale", "raised", 56.0, ("load",)),
        ("sensor_stale", "cleared", 74.0, ()),
    ]
    assert plant.alerts[0].severity == "low"
    # the window restarts after the gap: no scores until it is full again
    assert {plant.step(T0 + i).not_scored for i in range(70, 70 + WINDOW - 1)} == {"warmup"}
    assert plant.step(T0 + 70 + WINDOW - 1).scored


def test_many_units_are_scored_in_one_batch_exactly_as_one_by_one(model_set: ModelSet) -> None:
    units = [f"u{i}" for i in range(30)]  # one part: <= MAX_SCORE_BATCH
    e, metrics = engine(model_set, units=[{"name": u} for u in units])
    plant = Plant(e)
    series = {u: normal_series(WINDOW + 1, seed=100 + i) for i, u in enumerate(units)}
    series["u7"][-2:, 3] += 2.0  # one unit with a vibration excursion
    for k in range(WINDOW):
        for u in units:
            plant.send(u, T0 + k, dict(zip(NAMES, series[u][k].tolist(), strict=True)))
    plant.tick(T0 + WINDOW)  # one tick: 30 * WINDOW closed steps, 30 full windows
    assert sample(metrics, "batch_size_count") == 1
    assert sample(metrics, "batch_size_sum") == 30
    for u in units:
        plant.send(u, T0 + WINDOW, dict(zip(NAMES, series[u][WINDOW].tolist(), strict=True)))
    plant.tick(T0 + WINDOW + 0.5)
    assert sample(metrics, "batch_size_count") == 2
    assert sample(metrics, "steps_scored_total") == 60
    assert sample(metrics, "inference_seconds_count", model="iforest") == 2
    scored = [s for s in plant.steps if s.scored]
    for s in scored:
        k = int(s.ts - T0)
        alone = model_set.score(series[s.unit][k - WINDOW + 1 : k + 1][None])
        assert s.score == pytest.approx(float(alone.votes.ensemble_score[0]), rel=1e-5)
        assert s.decision == bool(alone.votes.ensemble_decision[0])
        for name, verdict in s.models.items():
            assert verdict.score == pytest.approx(float(alone.scores[name][0]), rel=1e-5)
    last = {s.unit: s for s in scored if s.ts == T0 + WINDOW}
    assert last["u7"].top_sensors[0].sensor == "turbine_vibration"
    assert e.units_tracked == 30


def test_bad_payloads_are_counted_while_scoring_continues(model_set: ModelSet) -> None:
    series = normal_series(80, seed=5)
    clean, _ = engine(model_set)
    reference = Plant(clean)
    reference.stream(series)

    e, metrics = engine(model_set)
    plant = Plant(e)
    junk = [
        ("plant/plant1/u1/sensors/load", b"{not json"),
        ("plant/plant1/u1/sensors/load", b'{"value": NaN}'),
        ("plant/plant1/u1/sensors/load", b"true"),
        ("plant/plant1/u1/sensors/nope", b"1"),
        ("plant/plant1/u9/telemetry", b'{"values": {"load": 1}}'),
        ("elsewhere", b"1"),
        ("plant/plant1/u1/sensors/load", b"\xff\xfe"),
        ("plant/plant1/u1/sensors/load", b"x" * 70_000),
    ]

    def garbage(i: int, ts: float) -> None:
        topic, payload = junk[i % len(junk)]
        e.handle_message(topic, payload, ts + 0.02)

    plant.stream(series, between=garbage)
    assert [(s.ts, s.score, s.decision) for s in plant.steps] == [
        (s.ts, s.score, s.decision) for s in reference.steps
    ]
    reasons = {
        "bad_json": 10,
        "not_finite": 10,
        "bad_type": 10,
        "unknown_sensor": 10,
        "unknown_unit": 10,
        "bad_topic": 10,
        "bad_encoding": 10,
        "oversized": 10,
    }
    for reason, n in reasons.items():
        assert sample(metrics, "messages_rejected_total", reason=reason) == n
    assert sample(metrics, "messages_received_total") == 160


def test_per_sensor_messages_give_the_same_scores_as_telemetry(model_set: ModelSet) -> None:
    series = normal_series(50, seed=6)
    ref_engine, _ = engine(model_set)
    reference = Plant(ref_engine)
    reference.stream(series)

    e, metrics = engine(model_set)
    plant = Plant(e)
    for i, row in enumerate(series):
        ts = T0 + i
        stamp = rfc3339(ts, "seconds")
        for name, value in reversed(list(zip(NAMES, row.tolist(), strict=True))):
            payload = orjson.dumps({"ts": stamp, "value": value})
            e.handle_message(f"plant/plant1/u1/sensors/{name}", payload, ts + 0.2)
        plant.tick(ts + 0.3)
    assert [(s.ts, s.how, s.score) for s in plant.steps] == [
        (s.ts, s.how, s.score) for s in reference.steps
    ]
    assert sample(metrics, "readings_accepted_total") == 50 * 8


def test_stride_scores_every_nth_full_window(model_set: ModelSet) -> None:
    e, metrics = engine(model_set, models={"stride": 3})
    plant = Plant(e)
    plant.stream(normal_series(WINDOW + 9, seed=7))
    scored = [int(s.ts - T0) for s in plant.steps if s.scored]
    assert scored == [WINDOW - 1, WINDOW + 2, WINDOW + 5, WINDOW + 8]
    assert sample(metrics, "steps_dropped_total", reason="stride") == 6


def test_flood_guard_summarises_limit_alert_floods(model_set: ModelSet) -> None:
    limits = {"load": {"hi": 650.0}}
    e, metrics = engine(
        model_set,
        units=[{"name": "u1", "limits": limits}],
        alarm={"on_delay": 1, "off_delay": 1, "flood_max": 2, "flood_window_seconds": 20},
    )
    plant = Plant(e)
    series = normal_series(40, seed=8)
    series[0:10:2, 4] = 700.0  # five one-step excursions in the first 10 s
    plant.stream(series)
    raised = [a for a in plant.alerts if a.kind == "limit" and a.state == "raised"]
    assert [a.ts - T0 for a in raised] == [0.0, 2.0]
    assert sample(metrics, "alerts_suppressed_total", kind="limit") == 3
    [summary] = [a for a in plant.alerts if a.kind == "flood"]
    assert summary.state == "summary" and summary.flood is not None
    assert summary.flood.suppressed == 3 and dict(summary.flood.by_kind) == {"limit": 3}
    assert (summary.raised_at, summary.ts) == (T0, T0 + 20)
    assert summary in plant.step(T0 + 20).alerts  # reported at the first step past the window
    ALERT_SCHEMA.validate(orjson.loads(summary.to_json()))


LAG = 1200.0  # seconds the readings are old when they arrive


def lagged_flood(
    model_set: ModelSet, series: NDArray[np.float64]
) -> tuple[Engine, Metrics, list[Alert]]:
    """An engine with a flood guard of 2 raises per 20 s, fed ``series`` 20 minutes late."""
    e, metrics = engine(
        model_set,
        units=[{"name": "u1", "limits": {"load": {"hi": 650.0}}}],
        align={"lateness_seconds": 2.0, "stale_after_seconds": 5.0, "max_age_seconds": 86400},
        alarm={"on_delay": 1, "off_delay": 1, "flood_max": 2, "flood_window_seconds": 20},
    )
    alerts: list[Alert] = []
    for i, row in enumerate(series):
        ts = T0 + i
        payload = orjson.dumps({"ts": ts, "values": dict(zip(NAMES, row.tolist(), strict=True))})
        e.handle_message("plant/plant1/u1/telemetry", payload, ts + LAG + 0.01)
        alerts.extend(e.tick(ts + LAG + 0.05).alerts)
    return e, metrics, alerts


def test_flood_guard_holds_for_data_that_lags_the_agent_clock(model_set: ModelSet) -> None:
    """Readings 20 minutes old when they arrive (a gateway back-filling after an outage, or
    a plant clock behind the agent's): the flood window is in data time, so the guard holds
    back exactly what it holds back live. Judged on the agent's clock, every window would
    have ended at once and nothing would be held back (what CI saw in the flood test)."""
    series = normal_series(40, seed=8)
    series[0:10:2, 4] = 700.0
    _, metrics, alerts = lagged_flood(model_set, series)
    raised = [a for a in alerts if a.kind == "limit" and a.state == "raised"]
    assert [a.ts - T0 for a in raised] == [0.0, 2.0]
    assert sample(metrics, "alerts_suppressed_total", kind="limit") == 3
    [summary] = [a for a in alerts if a.kind == "flood"]
    assert summary.flood is not None and summary.flood.suppressed == 3
    assert (summary.raised_at, summary.ts) == (T0, T0 + 20)


def test_a_quiet_units_flood_summary_comes_out_on_its_own_clock(model_set: ModelSet) -> None:
    """A unit whose data lags by 20 minutes goes quiet inside a flood window: the summary
    comes out once the window has passed on the unit's clock, not before and not never."""
    series = normal_series(8, seed=8)
    series[0:8:2, 4] = 700.0  # four raises in the first 8 s, then silence
    e, _, alerts = lagged_flood(model_set, series)
    assert not [a for a in alerts if a.kind == "flood"]
    # The window ends at T0 + 20 in data time; its last step can close 1 s + lateness later.
    alerts.extend(e.tick(T0 + LAG + 20.5).alerts)
    assert not [a for a in alerts if a.kind == "flood"], "the window has not passed yet"
    alerts.extend(e.tick(T0 + LAG + 23.5).alerts)
    [summary] = [a for a in alerts if a.kind == "flood"]
    assert summary.flood is not None  # the silence raised sensor_stale: held back too
    assert dict(summary.flood.by_kind) == {"limit": 2, "sensor_stale": 1}


def test_reconfigure_keeps_windows_and_refuses_incompatible_sets(
    model_set: ModelSet, tmp_path: Path
) -> None:
    e, _ = engine(model_set)
    plant = Plant(e)
    series = normal_series(60, seed=9)
    plant.stream(series[:40])
    other = ModelSet.load(build_model_set(tmp_path / "v2", window=WINDOW, lstm_threshold=1.7))
    assert other.version != model_set.version
    e.reconfigure(e.settings, other)
    plant.stream(series[40:], t0=T0 + 40)
    assert plant.step(T0 + 40).scored  # the window carried over: no new warm-up
    assert plant.step(T0 + 40).models["lstm_ae"].threshold == 1.7
    doc = orjson.loads(e.scores_payload(plant.step(T0 + 45)))
    assert doc["model_set_version"] == other.version
    with pytest.raises(ManifestError, match="window"):
        e.reconfigure(e.settings, ModelSet.load(build_model_set(tmp_path / "w", window=WINDOW + 1)))
    fewer = THERMAL_UNIT_SENSORS[:6]
    with pytest.raises(ManifestError, match="sensors"):
        e.reconfigure(
            e.settings, ModelSet.load(build_model_set(tmp_path / "s", fewer, window=WINDOW))
        )
    assert e.model_set is other


def test_tick_cost_for_100_units(model_set: ModelSet) -> None:
    """Per-tick cost with 100 units each closing one step: one batch of 100 windows."""
    units = [f"u{i}" for i in range(100)]
    e, _ = engine(model_set, units=[{"name": u} for u in units])
    rng = np.random.default_rng(0)
    base = normal_series(1, seed=10)[0]
    payloads = {}
    for k in range(WINDOW + 20):
        noise = rng.standard_normal((len(units), len(NAMES))) * 0.1
        payloads[k] = [
            orjson.dumps(
                {"ts": T0 + k, "values": dict(zip(NAMES, (base + n).tolist(), strict=True))}
            )
            for n in noise
        ]
    timings = []
    for k in range(WINDOW + 20):
        for u, payload in zip(units, payloads[k], strict=True):
            e.handle_message(f"plant/plant1/{u}/telemetry", payload, T0 + k + 0.01)
        start = time.perf_counter()
        result = e.tick(T0 + k + 0.05)
        timings.append(time.perf_counter() - start)
        assert len(result.steps) == 100
    steady = sorted(timings[WINDOW:])
    median = steady[len(steady) // 2]
    print(f"tick with 100 units (one batch of 100 windows): median {median * 1e3:.2f} ms")
    assert median < 0.5  # far from the 1 s step; typically a few ms


def test_auto_discovered_units_are_bounded_by_max_units(model_set: ModelSet) -> None:
    e, metrics = engine(model_set, units=[], ingest={"auto_discover_units": True, "max_units": 5})
    plant = Plant(e)
    row = dict(zip(NAMES, normal_series(1, seed=11)[0].tolist(), strict=True))
    for i in range(20):
        plant.send(f"line{i}", T0, row)
    plant.tick(T0 + 0.5)
    assert e.units_tracked == 5
    assert sorted(s.unit for s in plant.steps) == [f"line{i}" for i in range(5)]
    assert sample(metrics, "messages_rejected_total", reason="too_many_units") == 15
    assert sample(metrics, "units_tracked") == 5


def test_a_large_backlog_is_scored_in_bounded_batches(model_set: ModelSet) -> None:
    from edge_agent.pipeline.engine import MAX_SCORE_BATCH

    units = [f"u{i}" for i in range(300)]
    e, metrics = engine(model_set, units=[{"name": u} for u in units])
    plant = Plant(e)
    series = {u: normal_series(WINDOW, seed=500 + i) for i, u in enumerate(units)}
    for k in range(WINDOW):
        for u in units:
            plant.send(u, T0 + k, dict(zip(NAMES, series[u][k].tolist(), strict=True)))
    plant.tick(T0 + WINDOW)  # 300 full windows close in one tick
    assert sample(metrics, "steps_scored_total") == 300
    assert sample(metrics, "batch_size_count") == -(-300 // MAX_SCORE_BATCH)
    assert sample(metrics, "batch_size_sum") == 300
    last = {s.unit: s for s in plant.steps if s.scored}
    for u in ("u0", "u150", "u299"):
        alone = model_set.score(series[u][None])
        assert last[u].score == pytest.approx(float(alone.votes.ensemble_score[0]), rel=1e-5)


def test_latency_metrics_show_time_lost_before_the_agent_received_a_reading(
    model_set: ModelSet,
) -> None:
    """reading_to_score starts at arrival; reading_age_at_score at the reading's own ts, so
    a reading that sat 2 s in a gateway or a socket shows up in the second one only."""
    e, metrics = engine(model_set)
    series = normal_series(WINDOW + 2, seed=21)
    for k, row in enumerate(series):
        payload = orjson.dumps(
            {"ts": T0 + k, "values": dict(zip(NAMES, row.tolist(), strict=True))}
        )
        e.handle_message("plant/plant1/u1/telemetry", payload, T0 + k + 2.0)  # 2 s in transit
        e.tick(T0 + k + 2.004)
    scored = sample(metrics, "steps_scored_total")
    assert scored == 3
    arrival = "reading_to_score_seconds"
    age = "reading_age_at_score_seconds"
    assert sample(metrics, f"{arrival}_count") == sample(metrics, f"{age}_count") == scored
    assert sample(metrics, f"{arrival}_sum") == pytest.approx(0.004 * scored, abs=1e-6)
    assert sample(metrics, f"{age}_sum") == pytest.approx(2.004 * scored, abs=1e-6)
