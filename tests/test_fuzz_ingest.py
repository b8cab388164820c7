"""Hostile input through the agent's real data path: nothing escapes, everything is counted.

Every message off the network goes through :meth:`Engine.handle_message` (ingest, then
alignment); ticks close steps and score them with onnxruntime on a handmade model set. A
seeded generator builds 10⁵ payloads of every bad kind (malformed and truncated JSON, wrong
types, NaN and ±inf, numbers beyond float range, deep nesting, 1 MB bodies, invalid UTF-8,
unknown units and sensors, timestamps far away, random topics) mixed with valid readings;
a hypothesis test adds shrinking examples on top. For *each* message the test checks that
exactly one of ``messages_accepted`` or one ``messages_rejected{reason}`` moved, so
``messages_received == messages_accepted + sum(messages_rejected)`` holds exactly.

Every rejection is also logged at DEBUG through the agent's own log processors (secret
redaction, orjson rendering), so a payload that breaks the log renderer would show up too.
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import structlog
from handmade_models import build_model_set, normal_series
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config import AgentSettings
from edge_agent.logging_setup import RedactSecrets, _orjson_dumps
from edge_agent.metrics import Metrics
from edge_agent.pipeline.engine import Engine
from edge_agent.pipeline.ingest import REJECT_REASONS
from edge_agent.pipeline.rejections import LINK_REASONS, RejectReason
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS

WINDOW = 20
PLANT = "p1"
NAMES = [s.name for s in THERMAL_UNIT_SENSORS]
SPECS = {s.name: s for s in THERMAL_UNIT_SENSORS}
N_PAYLOADS = 100_000
#: Simulated seconds between two messages (the clock the engine is given).
DT = 0.01
T_START = 1_714_564_800.0


@pytest.fixture(scope="module")
def model_set(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    return ModelSet.load(build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW))


class LineCounter(io.TextIOBase):
    """A log sink that keeps only a count and the last line (10⁵ lines would be 30 MB)."""

    def __init__(self) -> None:
        self.lines = 0
        self.last = ""

    def write(self, s: str) -> int:
        self.lines += s.count("\n")
        self.last = s
        return len(s)


@pytest.fixture
def debug_log() -> LineCounter:
    return LineCounter()


def json_logger(sink: LineCounter) -> Any:
    """A DEBUG structlog logger with the agent's own JSON rendering chain, into ``sink``.

    Built directly rather than through the stdlib root logger, where pytest's log capture
    would keep (and format) every one of the 10⁵ records.
    """
    return structlog.wrap_logger(
        structlog.PrintLogger(file=sink),  # type: ignore[arg-type]
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            RedactSecrets(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ],
    )


def make_engine(
    model_set: ModelSet, log: LineCounter | None = None, **overrides: Any
) -> tuple[Engine, Metrics]:
    base: dict[str, Any] = {
        "agent_id": "fuzz",
        "plant": PLANT,
        "units": [{"name": "unit1"}, {"name": "unit2", "limits": {"load": {"hi": 650.0}}}],
        "align": {"lateness_seconds": 1.0, "stale_after_seconds": 5.0},
        "alarm": {"on_delay": 2, "off_delay": 2},
        "topics": {"publish_scores": True},
    }
    base.update(overrides)
    metrics = Metrics()
    engine = Engine(AgentSettings(**base), model_set, metrics, json_logger(log or LineCounter()))
    return engine, metrics


class Accounting:
    """Reads the message counters straight from the metrics (after the engine flushes).

    Reads the counters' current values directly (prometheus_client's ``_value``): a full
    ``collect()`` per message would cost more than the ingest being tested.
    """

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics

    def rejected(self) -> dict[str, float]:
        children = self.metrics.messages_rejected._metrics.items()
        return {k[0]: v for k, c in children if (v := c._value.get())}

    def snapshot(self) -> tuple[float, float, dict[str, float]]:
        """(received, accepted, rejected by reason)."""
        self.engine.flush_metrics()
        return (
            self.metrics.messages_received._value.get(),
            self.metrics.messages_accepted._value.get(),
            self.rejected(),
        )

    def total(self) -> tuple[float, float, float]:
        """(received, accepted, sum of rejected), cheaply."""
        self.engine.flush_metrics()
        m = self.metrics
        rejected = sum(c._value.get() for c in m.messages_rejected._metrics.values())
        return m.messages_received._value.get(), m.messages_accepted._value.get(), rejected

    def accepted_or_counted(self, send: Callable[[], None]) -> bool:
        """Send one message; True if accepted. Asserts it was counted exactly once.

        Counters only grow, so "rejected grew by exactly 1" means one reason moved by one.
        """
        received0, accepted0, rejected0 = self.total()
        send()
        received1, accepted1, rejected1 = self.total()
        assert received1 == received0 + 1
        assert (accepted1 - accepted0, rejected1 - rejected0) in ((1, 0), (0, 1)), (
            f"accepted +{accepted1 - accepted0}, rejected +{rejected1 - rejected0}"
        )
        return accepted1 > accepted0

    def outcome_of(self, send: Callable[[], None]) -> str:
        """Send one message; return ``accepted`` or the one reason it was rejected for."""
        before = self.rejected()
        if self.accepted_or_counted(send):
            return "accepted"
        after = self.rejected()
        (reason,) = [r for r, n in after.items() if n != before.get(r, 0.0)]
        return reason


# -- payload generation -------------------------------------------------------------------


class PayloadFactory:
    """Seeded generator of (topic, payload, kind) across every kind of bad input."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    # topics
    def telemetry_topic(self, unit: str = "unit1") -> str:
        return f"plant/{PLANT}/{unit}/telemetry"

    def sensor_topic(self, sensor: str, unit: str = "unit1") -> str:
        return f"plant/{PLANT}/{unit}/sensors/{sensor}"

    def random_topic(self) -> str:
        r = self.r
        choice = r.randrange(9)
        if choice == 0:
            return ""
        if choice == 1:
            return "".join(chr(r.randrange(1, 0x2FFF)) for _ in range(r.randrange(1, 60)))
        if choice == 2:
            return f"plant/{PLANT}/{r.choice(['+', '#', '', ' ', 'u/1', 'x' * 300])}/telemetry"
        if choice == 3:
            return "plant/other/unit1/telemetry"
        if choice == 4:
            return f"plant/{PLANT}/unit{r.randrange(3, 10**6)}/telemetry"  # unknown unit
        if choice == 5:
            return self.sensor_topic("".join(r.choices("abcxyz_/+#", k=r.randrange(0, 20))))
        if choice == 6:
            return "/" * r.randrange(1, 50)
        if choice == 7:
            return f"plant/{PLANT}/unit1/telemetry/extra"
        return "a/" * r.randrange(1, 2000)

    # values
    def good_value(self, sensor: str) -> float:
        spec = SPECS[sensor]
        return self.r.uniform(spec.lo, spec.hi)

    def snapshot(self, ts: float) -> dict[str, Any]:
        return {"ts": ts, "values": {n: self.good_value(n) for n in NAMES}}

    def bad_scalar(self) -> bytes:
        return self.r.choice(
            [
                b"NaN", b"nan", b"Infinity", b"-Infinity", b"inf", b"1e999", b"-1e999",
                b"1" + b"0" * 400, b"-" + b"9" * 5000, b"1.7976931348623157e309",
                b'"500"', b"true", b"false", b"null", b"[]", b"{}", b'[1,2]', b'{"a":1}',
                b"0x10", b"1_000", b"+1", b"01", b".5", b"5.", b"--1", b"1e", b"\"\"",
            ]
        )  # fmt: skip

    def text_number(self) -> bytes:
        return str(
            self.r.choice([self.r.uniform(-1e6, 1e6), self.r.randrange(-(10**6), 10**6)])
        ).encode()

    def bad_ts(self, now: float) -> bytes:
        r = self.r
        return r.choice(
            [
                b"1e20", b"-1e20", b"0", b"-1", b"1e999", b"NaN", b"true", b"null", b"[]",
                b'"0001-01-01T00:00:00Z"', b'"9999-12-31T23:59:59Z"', b'"2024-13-45T99:99:99Z"',
                b'"2024-05-01T12:00:00"', b'"yesterday"', b'""', b'"' + b"9" * 10000 + b'"',
                str(now - 10**7).encode(), str(now + 10**7).encode(),
                f'"{time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))}+00:00"'.encode(),
                f'"{time.strftime("%Y-%m-%dt%H:%M:%S", time.gmtime(now))}z"'.encode(),
                str(now).encode(), str(int(now)).encode(),
            ]
        )  # fmt: skip

    def deep(self) -> bytes:
        depth = self.r.choice([100, 1000, 10_000, 100_000])
        if self.r.random() < 0.5:
            return b"[" * depth + b"]" * depth
        inner = b'{"a":' * depth + b"1" + b"}" * depth
        return b'{"values": {"load": ' + inner + b"}}"

    def big(self) -> bytes:
        size = self.r.choice([70_000, 300_000, 1_048_576])
        kind = self.r.randrange(3)
        if kind == 0:  # valid JSON, 1 MB of padding in an ignored key
            pad = "x" * (size - 200)
            return orjson.dumps({"values": {"load": 500.0}, "pad": pad})
        if kind == 1:  # 1 MB of values, all unknown sensors
            n = size // 20
            return orjson.dumps({"values": {f"s{i:08d}": 1.0 for i in range(n)}})
        return bytes(self.r.getrandbits(8) for _ in range(min(size, 100_000))) * (
            size // min(size, 100_000)
        )

    def invalid_utf8(self) -> bytes:
        r = self.r
        return r.choice(
            [
                b'{"value": "\xff"}', b"\xff\xfe\xfd", b'{"values": {"lo\xc3\x28d": 1}}',
                b'{"ts": "\xed\xa0\x80", "value": 1}', b"\xc0\xaf", b'"\xf8\x88\x80\x80\x80"',
                b'{"values": {"load": 500}}\xff', b"\xef\xbb\xbf" + b'{"value": 1}',
            ]
        )  # fmt: skip

    def mangled(self, good: bytes) -> bytes:
        r = self.r
        choice = r.randrange(5)
        if choice == 0:
            return good[: r.randrange(0, max(1, len(good)))]
        if choice == 1:
            b = bytearray(good)
            for _ in range(r.randrange(1, 6)):
                if b:
                    b[r.randrange(len(b))] = r.getrandbits(8)
            return bytes(b)
        if choice == 2:
            return bytes(r.getrandbits(8) for _ in range(r.randrange(0, 200)))
        if choice == 3:
            return "".join(chr(r.randrange(32, 127)) for _ in range(r.randrange(0, 200))).encode()
        return good.replace(b":", b"", 1)

    def payload(self, i: int, now: float) -> tuple[str, bytes, str]:
        """The i-th message at simulated time ``now``: (topic, payload, generator kind)."""
        r = self.r
        step_ts = float(math.floor(now)) - 1.0
        roll = r.random()
        sensor = r.choice(NAMES)
        if roll < 0.12:  # a valid snapshot of the current step (builds windows, gets scored)
            unit = "unit1" if r.random() < 0.7 else "unit2"
            return self.telemetry_topic(unit), orjson.dumps(self.snapshot(step_ts)), "valid"
        if roll < 0.20:  # a valid single reading, bare or wrapped
            body = (
                self.text_number() if r.random() < 0.3 else
                orjson.dumps({"ts": now - r.uniform(0, 5), "value": self.good_value(sensor)})
            )  # fmt: skip
            return self.sensor_topic(sensor), body, "sensor"
        if roll < 0.27:  # telemetry with unknown sensors and out-of-range values mixed in
            values: dict[str, Any] = {}
            for _ in range(r.randrange(1, 12)):
                pick = r.randrange(3)
                if pick == 0:
                    values[r.choice(NAMES)] = self.good_value(r.choice(NAMES))
                elif pick == 1:
                    values["".join(r.choices("abcdefgh_", k=r.randrange(1, 40)))] = 1.0
                else:
                    spec = SPECS[r.choice(NAMES)]
                    values[spec.name] = spec.hi + r.uniform(1e-3, 1e9) * r.choice([1, -1])
            return self.telemetry_topic(), orjson.dumps({"ts": now, "values": values}), "mixed"
        if roll < 0.37:  # right shape, wrong types or bad numbers
            s = self.bad_scalar()
            forms = [
                b'{"value": ' + s + b"}",
                s,
                b'{"values": {"' + sensor.encode() + b'": ' + s + b"}}",
                b'{"values": ' + s + b"}",
                b'{"ts": ' + s + b', "values": {"load": 500}}',
                b'{"values": {}}',
                b'{"value": 1, "value": ' + s + b"}",
            ]
            body = r.choice(forms)
            topic = self.telemetry_topic() if b"values" in body else self.sensor_topic(sensor)
            return topic, body, "bad_type"
        if roll < 0.45:  # timestamps
            ts = self.bad_ts(now)
            if r.random() < 0.5:
                return self.sensor_topic(sensor), b'{"ts": ' + ts + b', "value": 500}', "bad_ts"
            return (
                self.telemetry_topic(),
                b'{"ts": ' + ts + b', "values": {"load": 500.0}}',
                "bad_ts",
            )
        if roll < 0.48:
            return self.telemetry_topic(), self.deep(), "deep"
        if roll < 0.4805:
            return self.telemetry_topic(), self.big(), "big"
        if roll < 0.54:
            return (
                r.choice([self.telemetry_topic(), self.sensor_topic(sensor)]),
                self.invalid_utf8(),
                "utf8",
            )
        if roll < 0.72:
            good = orjson.dumps(self.snapshot(step_ts))
            return self.telemetry_topic(), self.mangled(good), "mangled"
        if roll < 0.86:
            good = orjson.dumps(self.snapshot(step_ts))
            return self.random_topic(), good, "topic"
        if roll < 0.93:  # unknown units, on both topic kinds
            unit = f"unit{r.randrange(3, 50)}"
            if r.random() < 0.5:
                return self.telemetry_topic(unit), orjson.dumps(self.snapshot(step_ts)), "unit"
            return self.sensor_topic(sensor, unit), b"500", "unit"
        # odd but legal encodings: whitespace, extra and duplicate keys, ints for floats
        forms = [
            b'  \n{"values": {"load": 500}, "extra": [1, {"x": null}]}  ',
            b'{"values": {"load": 500, "load": 501}}',
            b'{"values": {"load": 500}, "ts": ' + str(now).encode() + b"}",
            b'{"values": {"load": 5e2}}',
            b'{"values": {"load": 1e-400}}',  # underflows to 0.0: a number, in range
            b'{"values": {"' + "\u00e9\u00e8".encode() + b'": 1, "load": 500}}',
        ]
        return self.telemetry_topic(), r.choice(forms), "odd"

    def stream(self, n: int) -> Iterator[tuple[float, str, bytes, str]]:
        for i in range(n):
            now = T_START + i * DT
            topic, payload, kind = self.payload(i, now)
            yield now, topic, payload, kind


# -- tests ----------------------------------------------------------------------------------


def test_1e5_generated_payloads_are_each_accepted_or_counted_once(
    model_set: ModelSet, debug_log: LineCounter
) -> None:
    """10⁵ seeded payloads: no exception, exact per-message accounting, scoring goes on."""
    strict, strict_metrics = make_engine(model_set, debug_log)
    # The second engine discovers units (up to 20) and parses payloads up to 2 MB, so the
    # 1 MB bodies really go through the JSON parser.
    loose, loose_metrics = make_engine(
        model_set,
        debug_log,
        ingest={"auto_discover_units": True, "max_units": 20, "max_payload_bytes": 2_000_000},
    )
    engines = [
        (strict, Accounting(strict, strict_metrics)),
        (loose, Accounting(loose, loose_metrics)),
    ]
    outcomes: Counter[tuple[str, str]] = Counter()
    scored_steps = 0
    t0 = time.monotonic()
    for i, (now, topic, payload, kind) in enumerate(
        PayloadFactory(seed=20240501).stream(N_PAYLOADS)
    ):
        engine, accounting = engines[i % 2]

        def send(e: Engine = engine, t: str = topic, p: bytes = payload, n: float = now) -> None:
            e.handle_message(t, p, n)

        try:
            accepted = accounting.accepted_or_counted(send)
        except AssertionError as exc:
            raise AssertionError(
                f"message {i} ({kind}) {topic[:80]!r} {payload[:200]!r}: {exc}"
            ) from None
        except Exception as exc:  # anything else escaped the ingest path
            raise AssertionError(
                f"handle_message raised on message {i} ({kind}) {topic[:80]!r} "
                f"{payload[:200]!r}: {exc!r}"
            ) from exc
        outcomes[(kind, "accepted" if accepted else "rejected")] += 1
        if i % 50 == 49:
            for e, _ in engines:
                result = e.tick(now)
                scored_steps += sum(1 for s in result.steps if s.scored)
    elapsed = time.monotonic() - t0

    total_received = total_accepted = 0.0
    reasons: Counter[str] = Counter()
    for _, accounting in engines:
        received, accepted, rejected = accounting.snapshot()
        assert received == accepted + sum(rejected.values())
        assert set(rejected) <= set(REJECT_REASONS)
        total_received += received
        total_accepted += accepted
        reasons.update(rejected)
    assert total_received == N_PAYLOADS
    assert total_accepted == sum(n for (_, o), n in outcomes.items() if o == "accepted")

    # Every generator kind produced something, valid input was accepted, bad input was not.
    assert {k for k, _ in outcomes} >= {
        "valid", "sensor", "mixed", "bad_type", "bad_ts", "deep", "big", "utf8", "mangled",
        "topic", "unit", "odd",
    }  # fmt: skip
    assert outcomes[("valid", "rejected")] == 0
    for kind in ("deep", "utf8", "bad_type"):
        assert outcomes[(kind, "accepted")] == 0, kind
    # Every rejection reason was reached (too_many_units by the loose engine, oversized by
    # the strict one, too_old/too_new/bad_timestamp by the timestamp kind, …).
    assert set(reasons) == set(REJECT_REASONS)
    # ... and those are every reason of the one enum but the MQTT link's own two (reached
    # in tests/test_intake_rejections.py).
    assert set(REJECT_REASONS) | set(LINK_REASONS) == set(RejectReason)
    assert total_accepted > 0.15 * N_PAYLOADS
    # The data path kept scoring through it all, and the log pipeline rendered every rejection.
    assert scored_steps > 1000
    assert debug_log.lines >= sum(reasons.values())
    assert loose.units_tracked <= 20
    print(
        f"\nfuzz: {N_PAYLOADS} payloads in {elapsed:.1f}s, accepted {total_accepted:.0f}, "
        f"rejected {dict(reasons)}, scored steps {scored_steps}, log lines {debug_log.lines}"
    )


# -- hypothesis ------------------------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json = st.recursive(
    _json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=6,
)
_sensor_names = st.sampled_from([*NAMES, "nope", "", "load/x", "+", "#"])
_structured = st.fixed_dictionaries(
    {},
    optional={
        "ts": st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(),
            st.text(max_size=30),
            st.datetimes().map(lambda d: d.isoformat()),
            _json,
        ),
        "value": st.one_of(st.floats(allow_nan=False, allow_infinity=False), _json),
        "values": st.dictionaries(
            _sensor_names,
            st.one_of(st.floats(allow_nan=False, allow_infinity=False), _json),
            max_size=10,
        ),
    },
).map(lambda d: json.dumps(d).encode())
_payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    _json.map(lambda v: json.dumps(v).encode()),
    _structured,
    _structured.map(lambda b: b[: len(b) // 2]),
)
_topics = st.one_of(
    st.text(max_size=80),
    st.builds(lambda u: f"plant/{PLANT}/{u}/telemetry", st.text(max_size=12)),
    st.builds(
        lambda u, s: f"plant/{PLANT}/{u}/sensors/{s}",
        st.sampled_from(["unit1", "unit2", "unitX"]),
        _sensor_names,
    ),
    st.just(f"plant/{PLANT}/unit1/telemetry"),
)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(topic=_topics, payload=_payloads, offset=st.floats(min_value=-1e5, max_value=1e5))
def test_hypothesis_payloads_are_accepted_or_counted_once(
    model_set: ModelSet, debug_log: LineCounter, topic: str, payload: bytes, offset: float
) -> None:
    engine, metrics = _hypothesis_engine(model_set, debug_log)
    accounting = Accounting(engine, metrics)
    now = T_START + abs(offset)
    outcome = accounting.outcome_of(lambda: engine.handle_message(topic, payload, now))
    assert outcome == "accepted" or outcome in REJECT_REASONS
    engine.tick(now + 5.0)  # whatever was accepted also closes, aligns and scores cleanly


_ENGINES: dict[int, tuple[Engine, Metrics]] = {}


def _hypothesis_engine(model_set: ModelSet, log: LineCounter) -> tuple[Engine, Metrics]:
    """One engine for all examples (state accumulates, as in a long-running agent)."""
    key = id(model_set)
    if key not in _ENGINES:
        _ENGINES.clear()
        _ENGINES[key] = make_engine(
            model_set, log, ingest={"auto_discover_units": True, "max_units": 5}
        )
    return _ENGINES[key]


def test_unknown_unit_flood_is_bounded_and_counted(model_set: ModelSet) -> None:
    """10⁴ distinct unit names with auto-discovery and max_units 100: 100 admitted, rest counted."""
    engine, metrics = make_engine(
        model_set, units=[], ingest={"auto_discover_units": True, "max_units": 100}
    )
    accounting = Accounting(engine, metrics)
    factory = PayloadFactory(seed=7)
    now = T_START
    n = 10_000
    for i in range(n):
        now = T_START + i * 0.001
        body = orjson.dumps(factory.snapshot(float(math.floor(now)) - 1.0))
        engine.handle_message(f"plant/{PLANT}/flood-{i:05d}/telemetry", body, now)
        if i % 1000 == 999:
            engine.tick(now)
    engine.tick(now)
    received, accepted, rejected = accounting.snapshot()
    assert received == n == accepted + sum(rejected.values())
    assert accepted == 100 and rejected == {"too_many_units": n - 100}
    assert engine.units_tracked == 100
    # The internal tables are bounded by max_units too, not by the names seen.
    ingest = engine._ingest
    assert len(ingest.units) == 100
    assert len(ingest._routes) <= 100
    assert len(engine._units) <= 100
    # A unit admitted before the flood still works; a new one is still refused.
    before = accounting.snapshot()[1]
    engine.handle_message(
        f"plant/{PLANT}/flood-00000/telemetry", orjson.dumps(factory.snapshot(now)), now
    )
    engine.handle_message(
        f"plant/{PLANT}/late-comer/telemetry", orjson.dumps(factory.snapshot(now)), now
    )
    _, after, rejected_after = accounting.snapshot()
    assert after == before + 1 and rejected_after["too_many_units"] == n - 100 + 1


def _normal_snapshot_bodies(n: int, start: float) -> list[bytes]:
    values = normal_series(n, seed=3)
    return [
        orjson.dumps({"ts": start + k, "values": dict(zip(NAMES, map(float, row), strict=True))})
        for k, row in enumerate(values)
    ]


def test_engine_scores_normally_after_the_fuzz(model_set: ModelSet, debug_log: LineCounter) -> None:
    """Junk first, then a clean stream: every clean step is scored and nothing is raised."""
    engine, _ = make_engine(model_set)
    factory = PayloadFactory(seed=99)
    for now, topic, payload, _ in factory.stream(5_000):
        engine.handle_message(topic, payload, now)
        if int(now * 10) % 10 == 0:
            engine.tick(now)
    start = math.floor(T_START + 5_000 * DT) + 10.0
    engine.tick(start)
    steps = []
    for k, body in enumerate(_normal_snapshot_bodies(WINDOW + 40, start)):
        engine.handle_message(f"plant/{PLANT}/unit2/telemetry", body, start + k + 0.5)
        steps += engine.tick(start + k + 0.6).steps
    scored = [s for s in steps if s.unit == "unit2" and s.scored]
    assert len(scored) == 41
    assert not any(s.decision for s in scored)
