"""Alignment: steps close complete or on deadline, in order, with carry-forward and staleness."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest

from edge_agent.config import AgentSettings, AlignSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.align import MAX_PENDING_PER_UNIT, Aligner, ClosedStep
from edge_agent.pipeline.ingest import Ingestor
from edge_agent.pipeline.readings import Reading, Readings
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS

SENSORS = ["a", "b", "c"]
T0 = 1_714_564_800.0  # a multiple of every step used here


def aligner(**align: Any) -> tuple[Aligner, Metrics]:
    settings = AlignSettings(**{"lateness_seconds": 2.0, "stale_after_seconds": 5.0, **align})
    metrics = Metrics()
    return Aligner(SENSORS, 1.0, settings, metrics, max_empty_stale_run=4), metrics


def r(
    sensor: str, ts: float, value: float, unit: str = "u1", received: float | None = None
) -> Reading:
    return Reading(
        unit, sensor, ts, value, ts if received is None else received, SENSORS.index(sensor)
    )


def add_step(
    al: Aligner, k: int, values: tuple[float, ...] = (1.0, 2.0, 3.0), unit: str = "u1"
) -> None:
    for name, v in zip(SENSORS, values, strict=True):
        al.add(r(name, T0 + k + 0.3, v, unit))


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"edge_agent_{name}_total", labels) or 0.0


def test_complete_step_closes_at_once_before_its_deadline() -> None:
    al, metrics = aligner()
    add_step(al, 0, (1.0, 2.0, 3.0))
    [step] = al.close_due(T0 + 0.5)  # deadline would be T0 + 1 + 2
    assert (step.unit, step.ts, step.how, step.stale, step.carried) == (
        "u1",
        T0,
        "complete",
        (),
        (),
    )
    assert step.row.tolist() == [1.0, 2.0, 3.0]
    assert step.last_received == pytest.approx(T0 + 0.3)
    assert count(metrics, "steps_closed", how="complete") == 1
    assert al.close_due(T0 + 0.6) == []


def test_incomplete_step_closes_on_its_deadline_with_carry_forward() -> None:
    al, metrics = aligner(lateness_seconds=2.0)
    add_step(al, 0)
    al.add(r("a", T0 + 1.1, 10.0))
    al.add(r("c", T0 + 1.2, 30.0))
    assert len(al.close_due(T0 + 0.5)) == 1  # the complete step 0
    assert al.close_due(T0 + 3.999) == []  # step 1 ends at T0 + 2; deadline T0 + 4
    [step] = al.close_due(T0 + 4.0)
    assert step.how == "deadline" and step.ts == T0 + 1
    assert step.row.tolist() == [10.0, 2.0, 30.0]  # b carried forward from step 0
    assert step.carried == (1,) and step.stale == ()
    assert count(metrics, "steps_closed", how="deadline") == 1
    assert count(metrics, "steps_stale") == 0


def test_missing_sensor_goes_stale_after_stale_after_seconds() -> None:
    al, metrics = aligner(stale_after_seconds=5.0)
    add_step(al, 0)
    for k in range(1, 9):  # b stops reporting after step 0
        al.add(r("a", T0 + k, 1.0))
        al.add(r("c", T0 + k, 3.0))
    steps = al.close_due(T0 + 11)  # deadline of step 8
    assert [s.ts - T0 for s in steps] == list(range(9))
    # carried while younger than 5 s (steps 1..4), stale from step 5 on
    assert [s.carried for s in steps] == [()] + [(1,)] * 4 + [()] * 4
    assert [s.stale for s in steps] == [()] * 5 + [(1,)] * 4
    assert all(math.isnan(s.row[1]) for s in steps[5:])
    assert count(metrics, "steps_stale") == 4


def test_a_sensor_never_seen_is_stale_from_the_start() -> None:
    al, metrics = aligner()
    al.add(r("a", T0, 1.0))
    al.add(r("b", T0, 2.0))
    [step] = al.close_due(T0 + 3)
    assert step.stale == (2,) and step.is_stale
    assert count(metrics, "steps_stale") == 1


def test_late_readings_and_duplicates_are_counted_and_dropped() -> None:
    al, metrics = aligner()
    add_step(al, 0, (1.0, 2.0, 3.0))
    al.add(r("a", T0 + 1.0, 5.0))
    al.add(r("a", T0 + 1.5, 6.0))  # same sensor, same open step: duplicate
    assert count(metrics, "readings_duplicate") == 1
    [s0] = al.close_due(T0 + 1.0)
    al.add(r("b", T0 + 0.5, 99.0))  # step 0 already closed and b had a value: duplicate
    assert count(metrics, "readings_duplicate") == 2
    [s1] = al.close_due(T0 + 4.0)
    assert s1.row.tolist() == [5.0, 2.0, 3.0]  # first value kept, b and c carried
    al.add(r("b", T0 + 1.7, 7.0))  # step 1 closed by deadline without b: late
    al.add(r("c", T0 - 30.0, 7.0))  # far in the past: late
    assert count(metrics, "readings_late") == 2
    assert count(metrics, "readings_duplicate") == 2
    assert s0.row.tolist() == [1.0, 2.0, 3.0]


def test_telemetry_message_closes_its_step_on_arrival() -> None:
    settings = AgentSettings.model_validate({"agent_id": "t", "units": [{"name": "u1"}]})
    metrics = Metrics()
    names = [s.name for s in THERMAL_UNIT_SENSORS]
    ingest = Ingestor(settings, THERMAL_UNIT_SENSORS, metrics, _Quiet())
    al = Aligner(names, 1.0, settings.align, metrics)
    values = {s.name: (s.lo + s.hi) / 4 for s in THERMAL_UNIT_SENSORS}
    payload = orjson.dumps({"ts": T0 + 5.0, "values": values})
    readings = ingest.parse("plant/plant1/u1/telemetry", payload, T0 + 5.01)
    assert readings is not None
    al.add_readings(readings)
    [step] = al.close_due(T0 + 5.02)  # long before the deadline (T0 + 8)
    assert step.how == "complete" and step.ts == T0 + 5.0
    assert step.row.tolist() == pytest.approx([values[n] for n in names])
    assert step.last_received == T0 + 5.01


def test_out_of_order_readings_within_the_open_window_are_fine() -> None:
    al, metrics = aligner()
    add_step(al, 0)
    assert len(al.close_due(T0 + 0.5)) == 1
    # step 2 is complete first, but step 1 is still open: it must wait (order matters)
    add_step(al, 2, (21.0, 22.0, 23.0))
    al.add(r("c", T0 + 1.9, 13.0))
    al.add(r("a", T0 + 1.1, 11.0))
    assert al.close_due(T0 + 2.5) == []
    al.add(r("b", T0 + 1.5, 12.0))  # completes step 1: both close, in order
    steps = al.close_due(T0 + 2.6)
    assert [(s.ts - T0, s.how, s.row.tolist()) for s in steps] == [
        (1.0, "complete", [11.0, 12.0, 13.0]),
        (2.0, "complete", [21.0, 22.0, 23.0]),
    ]
    assert count(metrics, "readings_late") == 0


def test_before_the_first_close_readings_may_arrive_in_any_order() -> None:
    al, metrics = aligner()
    al.add(r("a", T0 + 3.2, 31.0))
    al.add(r("a", T0 + 1.2, 11.0))
    al.add(r("b", T0 + 2.2, 22.0))
    steps = al.close_due(T0 + 6.0)  # deadline of step 3
    assert [s.ts - T0 for s in steps] == [1.0, 2.0, 3.0]
    assert [s.row[0] for s in steps] == [11.0, 11.0, 31.0]
    assert count(metrics, "readings_late") == 0


def test_a_complete_step_after_a_gap_waits_for_the_gap_deadline() -> None:
    al, _ = aligner()
    add_step(al, 0)
    add_step(al, 2, (7.0, 8.0, 9.0))  # nothing at all for step 1
    assert [s.ts - T0 for s in al.close_due(T0 + 2.5)] == [0.0]
    steps = al.close_due(T0 + 4.0)  # step 1's deadline: carried forward, then step 2
    assert [(s.ts - T0, s.how) for s in steps] == [(1.0, "deadline"), (2.0, "complete")]
    assert steps[0].row.tolist() == [1.0, 2.0, 3.0] and steps[0].carried == (0, 1, 2)
    assert steps[0].last_received is None


def test_steps_on_a_fine_grid_have_no_rounding_gaps() -> None:
    metrics = Metrics()
    al = Aligner(["a"], 0.1, AlignSettings(lateness_seconds=0.0), metrics)
    for k in range(1000):
        al.add(Reading("u1", "a", round(T0 + k * 0.1, 6), float(k), T0, 0))
    steps = al.close_due(T0 + 100.0)  # deadline of the last step (lateness 0)
    assert len(steps) == 1000
    assert [s.row[0] for s in steps] == [float(k) for k in range(1000)]
    assert np.all(np.diff([s.index for s in steps]) == 1)


def test_open_steps_per_unit_are_bounded() -> None:
    al, metrics = aligner()
    # only sensor a reports, and close_due is never called: steps cannot complete
    for k in range(200):
        al.add(r("a", T0 + k, float(k)))
        assert al.open_steps("u1") <= al.max_open_steps
    al.flush_metrics()  # step counts are batched until close_due or flush_metrics
    assert count(metrics, "steps_closed", how="overflow") == 200 - al.max_open_steps
    steps = al.close_due(T0)  # nothing due yet by the clock, overflow steps are pending
    assert [s.ts - T0 for s in steps] == list(range(200 - al.max_open_steps))


def test_pending_steps_are_bounded_when_ticks_stop() -> None:
    al, metrics = aligner()
    n = MAX_PENDING_PER_UNIT + 100
    for k in range(n):
        add_step(al, k)
    steps = al.close_due(T0 + n)
    assert len(steps) == MAX_PENDING_PER_UNIT
    assert steps[-1].ts == T0 + n - 1  # the newest are kept
    assert count(metrics, "steps_dropped", reason="backlog") == 100


def test_a_silent_unit_is_skipped_in_bulk_but_counted() -> None:
    al, metrics = aligner(stale_after_seconds=5.0)
    add_step(al, 0)
    steps = al.close_due(T0 + 100_000)
    # carried 4 steps, then 4 empty stale steps (max_empty_stale_run) come out one by one
    assert [s.is_stale for s in steps] == [False] * 5 + [True] * 4
    last_due = 100_000 - 2 - 1
    assert count(metrics, "steps_stale") == last_due - 4  # steps 5..last_due
    assert count(metrics, "steps_closed", how="skipped") == last_due - 8
    add_step(al, last_due + 1, (4.0, 5.0, 6.0))  # it comes back
    [back] = al.close_due(T0 + last_due + 1.5)
    assert back.row.tolist() == [4.0, 5.0, 6.0] and back.how == "complete"


def test_duplicates_and_late_values_inside_one_message_are_counted_per_value() -> None:
    al, metrics = aligner()
    al.add_readings(Readings("u1", T0 + 0.5, T0 + 0.5, [0, 1], [1.0, 2.0]))
    al.add_readings(Readings("u1", T0 + 0.6, T0 + 0.6, [1, 2], [9.0, 3.0]))  # b twice
    assert count(metrics, "readings_duplicate") == 1
    [step] = al.close_due(T0 + 0.7)
    assert step.row.tolist() == [1.0, 2.0, 3.0] and step.last_received == T0 + 0.6
    al.add_readings(Readings("u1", T0 + 0.8, T0 + 0.8, [0, 1, 2], [1.0, 2.0, 3.0]))
    assert count(metrics, "readings_duplicate") == 4  # a redelivered snapshot
    al.add_readings(Readings("u1", T0 + 1.5, T0 + 1.5, [0], [5.0]))
    assert al.close_due(T0 + 4.0)[0].carried == (1, 2)
    al.add_readings(Readings("u1", T0 + 1.6, T0 + 1.6, [0, 1], [5.0, 6.0]))
    assert count(metrics, "readings_duplicate") == 5  # a was in step 1, b was not
    assert count(metrics, "readings_late") == 1


def test_units_are_independent() -> None:
    al, _ = aligner()
    add_step(al, 0, unit="u1")
    add_step(al, 0, (4.0, 5.0, 6.0), unit="u2")
    steps: list[ClosedStep] = al.close_due(T0 + 0.5)
    assert {s.unit: s.row.tolist() for s in steps} == {"u1": [1, 2, 3], "u2": [4, 5, 6]}
    assert al.units == ["u1", "u2"]


class _Quiet:
    def debug(self, event: str, *args: Any, **kw: Any) -> None: ...

    def info(self, event: str, *args: Any, **kw: Any) -> None: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> None: ...


def test_backlog_burst_is_not_closed_ahead_of_its_own_data() -> None:
    """History arriving now (reconnect backlog, demo backfill) keeps its steps, none late."""
    al, metrics = aligner()
    now = T0 + 120.0
    closed: list[ClosedStep] = []
    for k in range(60):  # 60 s of history, delivered over 0.6 s of wall time
        arrival = now + k * 0.01
        for name in SENSORS:
            al.add(r(name, T0 + k + 0.3, float(k), received=arrival))
        closed += al.close_due(arrival + 0.005)
    assert [s.how for s in closed] == ["complete"] * 60
    assert [s.ts for s in closed] == [T0 + k for k in range(60)]
    assert count(metrics, "readings_late") == 0
    assert count(metrics, "steps_stale") == 0


def test_silent_unit_still_reaches_its_deadlines_at_wall_clock_speed() -> None:
    al, _ = aligner()
    add_step(al, 0)
    al.close_due(T0 + 0.5)
    al.add(r("a", T0 + 1.3, 9.0, received=T0 + 1.3))  # b and c never report for step 1
    assert al.close_due(T0 + 2.9) == []  # step 1 ends at T0+2, deadline T0+4
    [step] = al.close_due(T0 + 4.05)
    assert (step.how, step.carried) == ("deadline", (1, 2))


def test_steps_ready_flags_a_completed_step_until_it_is_collected() -> None:
    al, _ = aligner()
    al.add(r("a", T0 + 0.1, 1.0))
    al.add(r("b", T0 + 0.1, 1.0))
    assert not al.steps_ready  # incomplete: waits for its deadline, no early tick
    al.add(r("c", T0 + 0.1, 1.0))
    assert al.steps_ready
    assert len(al.close_due(T0 + 0.2)) == 1
    assert not al.steps_ready


class VisitsEveryUnit(Aligner):
    """The reference: ``close_due`` looks at every unit on every call (the old walk)."""

    def close_due(self, now: float) -> list[ClosedStep]:
        for unit, tl in self._units.items():
            tl.due_us = None
            self._with_pending[unit] = None
        return super().close_due(now)


@pytest.mark.parametrize("seed", range(6))
def test_the_schedule_closes_exactly_what_visiting_every_unit_closes(seed: int) -> None:
    """close_due visits only units with a due step (O(due units), not O(units)): random
    streams — gaps, late and early arrivals, bad readings, silent units, ticks at random
    times — must close the same steps, the same way, at the same calls as the full walk."""
    rng = np.random.default_rng(seed)
    settings = AlignSettings(lateness_seconds=1.5, stale_after_seconds=4.0)
    fast = Aligner(SENSORS, 1.0, settings, Metrics(), max_empty_stale_run=3)
    full = VisitsEveryUnit(SENSORS, 1.0, settings, Metrics(), max_empty_stale_run=3)
    units = [f"u{i}" for i in range(12)]
    silent = set(rng.choice(units, 3, replace=False).tolist())
    now = T0
    for _ in range(400):
        now += float(rng.uniform(0.0, 0.6))
        for _ in range(int(rng.integers(0, 6))):
            unit = str(rng.choice(units))
            if unit in silent and now > T0 + 20:
                continue
            ts = now - float(rng.exponential(0.8))  # sometimes late, rarely very late
            received = now + float(rng.normal(0, 0.05))
            if rng.random() < 0.05:
                col = int(rng.integers(0, len(SENSORS)))
                fast.add_bad(unit, ts, col)
                full.add_bad(unit, ts, col)
                continue
            cols = sorted(
                int(c) for c in rng.choice(len(SENSORS), int(rng.integers(1, 4)), replace=False)
            )
            values = [float(v) for v in rng.normal(size=len(cols))]
            for a in (fast, full):
                a.add_readings(Readings(unit, ts, received, cols, values))
        if rng.random() < 0.7:
            got, want = fast.close_due(now), full.close_due(now)
            assert [(s.unit, s.index, s.how, s.stale, s.carried, s.bad) for s in got] == [
                (s.unit, s.index, s.how, s.stale, s.carried, s.bad) for s in want
            ]
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a.row, b.row)
