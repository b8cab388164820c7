"""Ingest: every rejection reason counted (never raised), every valid form accepted."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import subscription_topics
from edge_agent.metrics import Metrics
from edge_agent.pipeline.ingest import REJECT_REASONS, Ingestor
from edge_agent.pipeline.readings import Reading, Readings
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS
from edge_agent.pipeline.timestamps import parse_timestamp

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z
SENSOR_TOPIC = "plant/plant1/u1/sensors/{}"
TELEMETRY_TOPIC = "plant/plant1/u1/telemetry"


class RecordingLog:
    """Keeps what was logged, to check that rejections are logged with their reason."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append(("debug", event, kw))

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append(("info", event, kw))

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append(("warning", event, kw))


def make(**overrides: Any) -> tuple[Ingestor, Metrics, RecordingLog]:
    base: dict[str, Any] = {"agent_id": "t", "units": [{"name": "u1"}]}
    base.update(overrides)
    s = AgentSettings(**base)
    metrics = Metrics()
    log = RecordingLog()
    return Ingestor(s, THERMAL_UNIT_SENSORS, metrics, log), metrics, log


NAMES = [s.name for s in THERMAL_UNIT_SENSORS]


def parse(ingest: Ingestor, topic: str, payload: bytes, received: float) -> list[Reading]:
    """The accepted values of one message, one Reading each ([] when rejected)."""
    readings = ingest.parse(topic, payload, received)
    if readings is None:
        return []
    assert isinstance(readings, Readings) and readings.columns
    assert len(readings.columns) == len(readings.values)
    return readings.each(NAMES)


def rejected(metrics: Metrics) -> dict[str, float]:
    """Non-zero rejection counts by reason."""
    samples = next(iter(metrics.messages_rejected.collect())).samples
    return {s.labels["reason"]: s.value for s in samples if s.name.endswith("_total") and s.value}


def sensor(name: str, payload: Any) -> tuple[str, bytes]:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return SENSOR_TOPIC.format(name), raw


REJECTIONS: list[tuple[str, str, bytes]] = [
    ("bad_topic", "plant/other/u1/sensors/load", b"500"),
    ("bad_topic", "plant/plant1/u1/sensors/load/extra", b"500"),
    ("bad_topic", "plant/plant1/u1/alerts", b"500"),
    ("bad_topic", "plant/plant1/bad unit/sensors/load", b"500"),
    ("bad_topic", "", b"500"),
    ("unknown_unit", "plant/plant1/u9/sensors/load", b"500"),
    ("unknown_unit", "plant/plant1/u9/telemetry", b'{"values": {"load": 500}}'),
    ("unknown_sensor", "plant/plant1/u1/sensors/nope", b"500"),
    ("bad_encoding", *sensor("load", b'{"value": 1, "x": "\xff"}')),
    ("bad_encoding", *sensor("load", b"\xff\xfe")),
    ("bad_json", *sensor("load", b'{"value": 1')),
    ("bad_json", *sensor("load", b"")),
    ("bad_json", *sensor("load", b"five")),
    ("bad_json", *sensor("load", b"0x10")),
    ("bad_type", *sensor("load", b"true")),
    ("bad_type", *sensor("load", b'{"value": true}')),
    ("bad_type", *sensor("load", b'{"value": false, "ts": 1714564800}')),
    ("bad_type", *sensor("load", b'"500"')),
    ("bad_type", *sensor("load", b'{"value": "500"}')),
    ("bad_type", *sensor("load", b'{"ts": 1714564800}')),
    ("bad_type", *sensor("load", b'{"ts": true, "value": 1}')),
    ("bad_type", *sensor("load", b"[500]")),
    ("bad_type", *sensor("load", b"null")),
    ("bad_type", *sensor("load", b'{"value": null}')),
    ("bad_type", TELEMETRY_TOPIC, b'{"values": {}}'),
    ("bad_type", TELEMETRY_TOPIC, b'{"values": [500]}'),
    ("bad_type", TELEMETRY_TOPIC, b'{"values": {"load": true}}'),
    ("bad_type", TELEMETRY_TOPIC, b'{"value": 500}'),
    ("bad_type", TELEMETRY_TOPIC, b"500"),
    ("not_finite", *sensor("load", b"NaN")),
    ("not_finite", *sensor("load", b"Infinity")),
    ("not_finite", *sensor("load", b"-Infinity")),
    ("not_finite", *sensor("load", b'{"value": NaN}')),
    ("not_finite", *sensor("load", b'{"value": 1e999}')),
    ("not_finite", *sensor("load", b"1" + b"0" * 400)),
    ("not_finite", TELEMETRY_TOPIC, b'{"values": {"load": 1e999, "steam_pressure": 160}}'),
    ("out_of_range", *sensor("load", b"800.5")),
    ("out_of_range", *sensor("load", b"-0.1")),
    ("out_of_range", *sensor("turbine_vibration", b'{"value": 51}')),
    ("out_of_range", TELEMETRY_TOPIC, b'{"values": {"load": 9000}}'),
    ("bad_timestamp", *sensor("load", b'{"ts": "yesterday", "value": 500}')),
    ("bad_timestamp", *sensor("load", b'{"ts": "2024-05-01T12:00:00", "value": 500}')),
    ("bad_timestamp", *sensor("load", b'{"ts": "2024-05-01", "value": 500}')),
    ("bad_timestamp", *sensor("load", b'{"ts": "", "value": 500}')),
    ("bad_timestamp", TELEMETRY_TOPIC, b'{"ts": "12:00", "values": {"load": 500}}'),
    ("too_old", *sensor("load", {"ts": NOW - 3601.0, "value": 500})),
    ("too_old", *sensor("load", b'{"ts": "2024-05-01T10:59:58Z", "value": 500}')),
    ("too_new", *sensor("load", {"ts": NOW + 61.0, "value": 500})),
    ("too_new", *sensor("load", {"ts": (NOW + 0.5) * 1000, "value": 500})),  # milliseconds
    ("too_new", TELEMETRY_TOPIC, b'{"ts": "2024-05-01T14:00:00+01:00", "values": {"load": 5}}'),
]


@pytest.mark.parametrize(("reason", "topic", "payload"), REJECTIONS)
def test_each_rejection_is_counted_under_its_reason_and_logged(
    reason: str, topic: str, payload: bytes
) -> None:
    ingest, metrics, log = make()
    assert parse(ingest, topic, payload, NOW) == []
    assert rejected(metrics) == {reason: 1.0}
    assert ("debug", "message_rejected") in [(lvl, ev) for lvl, ev, _ in log.events]
    assert [kw["reason"] for _, ev, kw in log.events if ev == "message_rejected"] == [reason]


def test_oversized_is_checked_before_parsing() -> None:
    ingest, metrics, _ = make(ingest={"max_payload_bytes": 64})
    assert parse(ingest, SENSOR_TOPIC.format("load"), b"1" * 64, NOW) == []  # valid size
    assert rejected(metrics) == {"out_of_range": 1.0}  # parsed: 111…1 is out of range
    assert parse(ingest, SENSOR_TOPIC.format("load"), b"\xff" * 65, NOW) == []
    assert parse(ingest, "not/a/topic", b"x" * 65, NOW) == []
    assert rejected(metrics) == {"out_of_range": 1.0, "oversized": 2.0}


def test_every_reason_is_covered_by_a_test_case() -> None:
    covered = {r for r, _, _ in REJECTIONS} | {"oversized", "too_many_units"}
    assert covered == set(REJECT_REASONS)


def test_auto_discovery_admits_units_up_to_max_units_and_only_on_valid_messages() -> None:
    ingest, metrics, log = make(ingest={"auto_discover_units": True, "max_units": 3})
    # junk from unknown units must not use up the unit budget
    for i in range(5):
        assert parse(ingest, f"plant/plant1/junk{i}/sensors/load", b"garbage", NOW) == []
    assert ingest.units == ["u1"]
    for name in ("u2", "u3"):
        assert len(parse(ingest, f"plant/plant1/{name}/sensors/load", b"500", NOW)) == 1
    assert ingest.units == ["u1", "u2", "u3"]
    assert parse(ingest, "plant/plant1/u4/telemetry", b'{"values": {"load": 1}}', NOW) == []
    assert parse(ingest, "plant/plant1/u4/sensors/load", b"500", NOW) == []
    assert rejected(metrics) == {"bad_json": 5.0, "too_many_units": 2.0}
    assert ingest.units == ["u1", "u2", "u3"]
    # admitted units keep working
    assert len(parse(ingest, "plant/plant1/u2/sensors/load", b"501", NOW)) == 1
    assert [kw["unit"] for _, ev, kw in log.events if ev == "unit_discovered"] == ["u2", "u3"]


def test_unknown_unit_without_auto_discovery_even_after_many_messages() -> None:
    ingest, metrics, _ = make()
    for _ in range(3):
        assert parse(ingest, "plant/plant1/u2/sensors/load", b"500", NOW) == []
    assert rejected(metrics) == {"unknown_unit": 3.0}
    assert ingest.units == ["u1"]


@pytest.mark.parametrize(
    ("payload", "ts"),
    [
        (b'{"ts": "2024-05-01T12:00:00Z", "value": 512.5}', NOW),
        (b'{"ts": "2024-05-01T12:00:00.250Z", "value": 512.5}', NOW + 0.25),
        (b'{"ts": "2024-05-01T14:00:00+02:00", "value": 512.5}', NOW),
        (b'{"ts": "2024-05-01T06:30:00-05:30", "value": 512.5}', NOW),
        (b'{"ts": "2024-05-01t12:00:00z", "value": 512.5}', NOW),
        (b'{"ts": "2024-05-01 12:00:00Z", "value": 512.5}', NOW),
        (b'{"ts": 1714564800, "value": 512.5}', NOW),
        (b'{"ts": 1714564799.5, "value": 512.5}', NOW - 0.5),
        (b'{"value": 512.5}', NOW + 1.0),  # no ts: arrival time
        (b"512.5", NOW + 1.0),  # bare number: arrival time
        (b"  512.5\n", NOW + 1.0),
        (b' \n {"value": 512.5, "quality": "good", "ts": 1714564800}', NOW),
    ],
)
def test_valid_sensor_payload_forms(payload: bytes, ts: float) -> None:
    ingest, metrics, _ = make()
    readings = parse(ingest, SENSOR_TOPIC.format("load"), payload, NOW + 1.0)
    assert readings == [Reading("u1", "load", ts, 512.5, NOW + 1.0, 4)]
    assert rejected(metrics) == {}


def test_integers_and_range_bounds_are_accepted() -> None:
    ingest, metrics, _ = make()
    assert parse(ingest, SENSOR_TOPIC.format("load"), b"0", NOW)[0].value == 0.0
    assert parse(ingest, SENSOR_TOPIC.format("load"), b"800", NOW)[0].value == 800.0
    assert rejected(metrics) == {}


def test_telemetry_yields_one_reading_per_sensor_in_model_order_columns() -> None:
    ingest, metrics, _ = make()
    values = {s.name: (s.lo + s.hi) / 2 for s in THERMAL_UNIT_SENSORS}
    payload = orjson.dumps({"ts": "2024-05-01T12:00:00Z", "values": values, "src": "gw1"})
    readings = parse(ingest, TELEMETRY_TOPIC, payload, NOW + 0.1)
    assert [(r.sensor, r.column, r.value, r.ts) for r in readings] == [
        (s.name, i, (s.lo + s.hi) / 2, NOW) for i, s in enumerate(THERMAL_UNIT_SENSORS)
    ]
    assert rejected(metrics) == {}


def test_telemetry_drops_unknown_and_out_of_range_values_but_keeps_the_rest() -> None:
    ingest, metrics, _ = make()
    payload = b'{"values": {"load": 500, "nope": 1, "steam_pressure": 999, "x": 2}}'
    readings = parse(ingest, TELEMETRY_TOPIC, payload, NOW)
    assert [(r.sensor, r.value) for r in readings] == [("load", 500.0)]
    assert rejected(metrics) == {}  # the message was accepted; its dropped values:
    values = next(iter(metrics.readings_rejected.collect())).samples
    dropped = {s.labels["reason"]: s.value for s in values if s.name.endswith("_total")}
    assert dropped == {"unknown_sensor": 2.0, "out_of_range": 1.0}


def test_timestamp_window_edges_are_inclusive() -> None:
    ingest, metrics, _ = make(align={"max_age_seconds": 10, "max_future_seconds": 5})
    topic = SENSOR_TOPIC.format("load")
    assert parse(ingest, topic, orjson.dumps({"ts": NOW - 10, "value": 1}), NOW)
    assert parse(ingest, topic, orjson.dumps({"ts": NOW + 5, "value": 1}), NOW)
    assert not parse(ingest, topic, orjson.dumps({"ts": NOW - 10.001, "value": 1}), NOW)
    assert not parse(ingest, topic, orjson.dumps({"ts": NOW + 5.001, "value": 1}), NOW)
    assert rejected(metrics) == {"too_old": 1.0, "too_new": 1.0}


def test_custom_topic_templates_and_their_subscriptions() -> None:
    topics = {"sensor": "site/{plant}/{unit}/{sensor}", "telemetry": "site/{plant}/{unit}/all"}
    ingest, metrics, _ = make(plant="north", topics=topics)
    assert parse(ingest, "site/north/u1/load", b"500", NOW)[0].sensor == "load"
    assert len(parse(ingest, "site/north/u1/all", b'{"values": {"load": 500}}', NOW)) == 1
    assert parse(ingest, "plant/north/u1/sensors/load", b"500", NOW) == []
    assert rejected(metrics) == {"bad_topic": 1.0}
    s = AgentSettings.model_validate(
        {"agent_id": "t", "plant": "north", "units": [{"name": "u1"}], "topics": topics}
    )
    # the agent subscribes with exactly the filters these templates need
    assert subscription_topics(s) == ["site/north/+/+", "site/north/+/all"]


def test_bad_topic_templates_are_refused() -> None:
    with pytest.raises(ValueError, match="needs"):
        make(topics={"sensor": "plant/{plant}/{unit}/sensors"})
    with pytest.raises(ValueError, match="unknown placeholder"):
        make(topics={"telemetry": "plant/{plant}/{unit}/{site}"})


def test_parse_timestamp() -> None:
    assert parse_timestamp("2024-05-01T12:00:00Z") == NOW
    assert parse_timestamp("2024-05-01T12:00:00.123456+00:00") == pytest.approx(NOW + 0.123456)
    assert parse_timestamp(1714564800) == NOW
    assert parse_timestamp(math.nan) is None
    assert parse_timestamp(math.inf) is None
    assert parse_timestamp("2024-13-01T00:00:00Z") is None
    assert parse_timestamp("2024-05-01T12:00:00") is None
    assert parse_timestamp(True) is None


# Anything at all may arrive from the network: parse must return, never raise.
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["ts", "value", "values", "load", "x"]), children)
    ),
    max_leaves=12,
)
_topics = st.sampled_from(
    [SENSOR_TOPIC.format("load"), SENSOR_TOPIC.format("nope"), TELEMETRY_TOPIC, "x/y"]
)


def _check(readings: list[Reading]) -> None:
    for r in readings:
        spec = THERMAL_UNIT_SENSORS[r.column]
        assert spec.name == r.sensor
        assert math.isfinite(r.value) and spec.lo <= r.value <= spec.hi
        assert math.isfinite(r.ts) and NOW - 3600 <= r.ts <= NOW + 60


_SHARED = make()  # building settings + metrics per example would dominate the run time


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=_topics, payload=st.binary(max_size=200))
def test_random_bytes_never_raise(topic: str, payload: bytes) -> None:
    ingest, metrics, _ = _SHARED
    before = sum(rejected(metrics).values())
    readings = parse(ingest, topic, payload, NOW)
    _check(readings)
    assert readings or sum(rejected(metrics).values()) > before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=_topics, doc=_json_values)
def test_random_json_never_raises(topic: str, doc: Any) -> None:
    ingest, metrics, _ = _SHARED
    before = sum(rejected(metrics).values())
    readings = parse(ingest, topic, json.dumps(doc).encode(), NOW)
    _check(readings)
    assert readings or sum(rejected(metrics).values()) > before


def test_per_message_cost_is_far_below_the_10k_per_second_budget() -> None:
    """The whole agent must take >= 10k msgs/s on one core; ingest gets a small share."""
    ingest, _, _ = make()
    topics = [SENSOR_TOPIC.format(s.name) for s in THERMAL_UNIT_SENSORS]
    payloads = [
        orjson.dumps({"ts": f"2024-05-01T12:00:{i % 60:02d}.000Z", "value": 1.0 + i % 7})
        for i in range(64)
    ]
    n = 20_000
    start = time.perf_counter()
    for i in range(n):
        parse(ingest, topics[i % 8], payloads[(i // 8) % 64], NOW)
    per_message = (time.perf_counter() - start) / n
    print(f"ingest: {per_message * 1e6:.2f} us/message")
    assert per_message < 50e-6  # generous for a loaded CI box; typically ~3 µs
