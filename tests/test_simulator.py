"""The simulator's physics, fault injection, ground truth and the stream/generate contract."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names
from edge_agent.tools.simulated_run import SimulationResult
from edge_agent.tools.simulator import (
    FAULT_KINDS,
    PROCESS_FAULT_KINDS,
    SENSOR_FAULT_KINDS,
    FaultEvent,
    ThermalUnitSimulator,
    generate_dataset,
    random_fault_schedule,
)

NAMES = sensor_names(THERMAL_UNIT_SENSORS)
COL = {name: i for i, name in enumerate(NAMES)}


def col(result: SimulationResult, name: str) -> np.ndarray:
    return result.values[:, COL[name]]


def step_spread(x: np.ndarray) -> float:
    """Typical step-to-step change of a healthy signal: its noise scale."""
    return float(np.std(np.diff(x)))


def faulty_and_clean(
    event: FaultEvent, n: int = 3000, seed: int = 5
) -> tuple[SimulationResult, SimulationResult]:
    sim = ThermalUnitSimulator(seed=seed, day_seconds=3600.0)
    return sim.generate(n, [event]), sim.generate(n)


# -- reproducibility, shapes, ranges -------------------------------------------------------


def test_same_seed_gives_identical_runs_and_other_seeds_differ() -> None:
    faults = random_fault_schedule(4000, 8, seed=1)
    a = ThermalUnitSimulator(seed=7).generate(4000, faults)
    b = ThermalUnitSimulator(seed=7).generate(4000, faults)
    c = ThermalUnitSimulator(seed=8).generate(4000, faults)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.allclose(a.values, c.values)
    # every sensor differs between seeds, not just a few
    assert np.all(np.abs(a.values - c.values).max(axis=0) > 0)


def test_shapes_dtypes_and_timestamps() -> None:
    sim = ThermalUnitSimulator(seed=0, step_seconds=2.0, start_time=1_700_000_000.0)
    result = sim.generate(1500, [FaultEvent("fouling", 100, 400)])
    assert result.values.shape == (1500, len(THERMAL_UNIT_SENSORS))
    assert result.values.dtype == np.float64
    assert result.timestamps.shape == (1500,)
    assert result.timestamps.dtype == np.float64
    assert result.labels.shape == (1500,)
    assert result.labels.dtype == np.int8
    assert result.sensors == THERMAL_UNIT_SENSORS
    assert result.timestamps[0] == 1_700_000_000.0
    np.testing.assert_allclose(np.diff(result.timestamps), 2.0)
    assert np.isfinite(result.values).all()


def test_zero_steps_gives_empty_result() -> None:
    result = ThermalUnitSimulator().generate(0, [FaultEvent("fouling", 10, 20)])
    assert result.values.shape == (0, len(THERMAL_UNIT_SENSORS))
    assert result.labels.shape == (0,)
    assert result.events == []


@pytest.mark.parametrize(
    ("seed", "step_seconds", "day_seconds", "n"),
    [(0, 1.0, 3600.0, 3 * 3600), (1, 1.0, 3600.0, 3 * 3600), (2, 60.0, 86400.0, 3 * 1440)],
)
def test_normal_values_stay_well_inside_valid_ranges(
    seed: int, step_seconds: float, day_seconds: float, n: int
) -> None:
    sim = ThermalUnitSimulator(seed=seed, step_seconds=step_seconds, day_seconds=day_seconds)
    values = sim.generate(n).values
    for i, spec in enumerate(THERMAL_UNIT_SENSORS):
        margin = 0.02 * (spec.hi - spec.lo)
        assert values[:, i].min() > spec.lo + margin, spec.name
        assert values[:, i].max() < spec.hi - margin, spec.name


def test_magnitudes_are_those_of_a_real_unit() -> None:
    result = ThermalUnitSimulator(seed=3, day_seconds=3600.0).generate(2 * 3600)
    assert 530 < col(result, "steam_temperature").mean() < 550
    assert col(result, "steam_pressure").min() > 100
    assert col(result, "steam_pressure").max() < 170
    flow_per_mw = col(result, "feedwater_flow") / col(result, "load")
    assert 0.75 < float(np.median(flow_per_mw)) < 0.85
    assert col(result, "turbine_vibration").min() > 2.0
    assert col(result, "turbine_vibration").max() < 4.0
    assert 60 < col(result, "bearing_temperature").mean() < 80
    assert col(result, "condenser_vacuum").min() > 4.8
    assert col(result, "condenser_vacuum").max() < 8.0
    assert 115 < col(result, "flue_gas_temperature").mean() < 145


# -- coupling --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_feedwater_and_pressure_follow_load_over_a_day(seed: int) -> None:
    result = ThermalUnitSimulator(seed=seed, day_seconds=3600.0).generate(3600)
    load = col(result, "load")
    for name in ("feedwater_flow", "steam_pressure"):
        assert np.corrcoef(load, col(result, name))[0, 1] > 0.8, name
    # weaker, noisier couplings, but clearly there
    for name in ("turbine_vibration", "condenser_vacuum", "bearing_temperature"):
        assert np.corrcoef(load, col(result, name))[0, 1] > 0.6, name


def test_sensors_lag_behind_load() -> None:
    """Pressure (90 s lag) correlates best with the load of some steps earlier."""
    result = ThermalUnitSimulator(seed=4, day_seconds=3600.0).generate(3 * 3600)
    load = col(result, "load")
    pressure = col(result, "steam_pressure")
    corr = [np.corrcoef(load[: len(load) - k], pressure[k:])[0, 1] for k in range(0, 400, 20)]
    assert int(np.argmax(corr)) * 20 >= 40


def test_load_follows_a_daily_cycle() -> None:
    days = 6
    result = ThermalUnitSimulator(seed=2, day_seconds=3600.0).generate(days * 3600)
    by_phase = col(result, "load").reshape(days, 24, 150).mean(axis=(0, 2))  # per "hour"
    night, afternoon = by_phase[2:6].mean(), by_phase[13:18].mean()
    assert afternoon - night > 100  # MW
    # and set-point changes make the days differ from each other
    per_day = col(result, "load").reshape(days, 3600)
    assert np.abs(per_day[0] - per_day[1]).mean() > 10


def test_day_length_compresses_the_cycle() -> None:
    fast = ThermalUnitSimulator(seed=1, day_seconds=600.0).generate(6000)
    slow = ThermalUnitSimulator(seed=1, day_seconds=86400.0).generate(6000)
    assert np.ptp(col(fast, "load")) > 2 * np.ptp(col(slow, "load"))


# -- faults ----------------------------------------------------------------------------


def test_faults_change_nothing_outside_their_window() -> None:
    events = [
        FaultEvent("spike", 300, 400, "load"),
        FaultEvent("drift", 600, 800, "steam_pressure"),
        FaultEvent("stuck", 1000, 1100, "feedwater_flow"),
        FaultEvent("noise_burst", 1300, 1400, "bearing_temperature"),
        FaultEvent("tube_leak", 1600, 1700),
        FaultEvent("bearing_degradation", 1900, 2100),
        FaultEvent("fouling", 2300, 2500),
    ]
    sim = ThermalUnitSimulator(seed=9)
    faulty, clean = sim.generate(2800, events), sim.generate(2800)
    inside = faulty.labels.astype(bool)
    np.testing.assert_array_equal(faulty.values[~inside], clean.values[~inside])
    for event in events:
        window = slice(event.start, event.end)
        assert not np.array_equal(faulty.values[window], clean.values[window]), event.kind


@pytest.mark.parametrize(
    ("start", "sensor"), [(700, "steam_pressure"), (0, "load"), (1024, "load")]
)
def test_stuck_repeats_the_last_value_exactly(start: int, sensor: str) -> None:
    faulty, clean = faulty_and_clean(FaultEvent("stuck", start, start + 200, sensor))
    held = col(faulty, sensor)[max(start - 1, 0)]
    np.testing.assert_array_equal(col(faulty, sensor)[start : start + 200], held)
    assert np.unique(col(clean, sensor)[start : start + 200]).size == 200
    others = [i for i, n in enumerate(NAMES) if n != sensor]
    np.testing.assert_array_equal(faulty.values[:, others], clean.values[:, others])


@pytest.mark.parametrize("sensor", NAMES)
def test_spikes_are_short_and_exceed_the_normal_spread(sensor: str) -> None:
    faulty, clean = faulty_and_clean(FaultEvent("spike", 1000, 1100, sensor))
    delta = np.abs(col(faulty, sensor) - col(clean, sensor))[1000:1100]
    spread = step_spread(col(clean, sensor))
    assert delta.max() > 8 * spread
    hit = delta > 0
    assert 1 <= hit.sum() <= 40  # short excursions, not a level shift


@pytest.mark.parametrize("sensor", NAMES)
def test_drift_ramps_steadily_away(sensor: str) -> None:
    faulty, clean = faulty_and_clean(FaultEvent("drift", 1000, 1300, sensor))
    delta = np.abs(col(faulty, sensor) - col(clean, sensor))[1000:1300]
    assert np.all(np.diff(delta) > 0)
    assert delta[0] < 0.02 * delta[-1]
    assert delta[-1] > 5 * step_spread(col(clean, sensor))


def test_magnitude_scales_a_drift() -> None:
    sim = ThermalUnitSimulator(seed=1)
    clean = col(sim.generate(800), "steam_temperature")
    ramps = [
        col(
            sim.generate(800, [FaultEvent("drift", 400, 700, "steam_temperature", m)]),
            "steam_temperature",
        )
        - clean
        for m in (1.0, 2.0)
    ]
    np.testing.assert_allclose(ramps[1][400:700], 2 * ramps[0][400:700])


@pytest.mark.parametrize("sensor", ["steam_temperature", "turbine_vibration", "load"])
def test_noise_burst_multiplies_the_noise(sensor: str) -> None:
    faulty, clean = faulty_and_clean(FaultEvent("noise_burst", 1000, 1300, sensor))
    ratio = step_spread(col(faulty, sensor)[1000:1300]) / step_spread(col(clean, sensor)[1000:1300])
    assert ratio > 3.0
    # noise only: the level stays where it was
    level_shift = abs(col(faulty, sensor)[1000:1300].mean() - col(clean, sensor)[1000:1300].mean())
    assert level_shift < 3 * step_spread(col(clean, sensor))


def test_bearing_degradation_raises_vibration_and_temperature_together() -> None:
    faulty, clean = faulty_and_clean(FaultEvent("bearing_degradation", 1000, 1300))
    window = slice(1000, 1300)
    vib = (col(faulty, "turbine_vibration") - col(clean, "turbine_vibration"))[window]
    temp = (col(faulty, "bearing_temperature") - col(clean, "bearing_temperature"))[window]
    assert vib[:50].mean() > 5 * step_spread(col(clean, "turbine_vibration"))
    assert temp[:50].mean() > 5 * step_spread(col(clean, "bearing_temperature"))
    assert vib[-50:].mean() > 2 * vib[:50].mean()  # growing
    assert temp[-50:].mean() > 2 * temp[:50].mean()
    assert np.corrcoef(vib, temp)[0, 1] > 0.8
    untouched = [COL[n] for n in ("load", "steam_pressure", "feedwater_flow", "condenser_vacuum")]
    np.testing.assert_array_equal(faulty.values[:, untouched], clean.values[:, untouched])


def test_tube_leak_raises_flow_while_pressure_and_temperature_sag() -> None:
    faulty, clean = faulty_and_clean(FaultEvent("tube_leak", 1000, 1200))
    window = slice(1050, 1200)  # after the onset

    def shift(name: str) -> float:
        return float((col(faulty, name) - col(clean, name))[window].mean())

    def spread(name: str) -> float:
        return step_spread(col(clean, name))

    assert shift("feedwater_flow") > 5 * spread("feedwater_flow")
    assert shift("steam_pressure") < -5 * spread("steam_pressure")
    assert shift("steam_temperature") < -3 * spread("steam_temperature")
    assert shift("load") == 0.0  # relative to load: the unit still makes the same power
    ratio_faulty = (col(faulty, "feedwater_flow") / col(faulty, "load"))[window].mean()
    ratio_clean = (col(clean, "feedwater_flow") / col(clean, "load"))[window].mean()
    assert ratio_faulty > ratio_clean * 1.03


def test_fouling_heats_the_flue_gas_and_cools_the_steam() -> None:
    faulty, clean = faulty_and_clean(FaultEvent("fouling", 1000, 1300))
    window = slice(1000, 1300)
    flue = (col(faulty, "flue_gas_temperature") - col(clean, "flue_gas_temperature"))[window]
    steam = (col(faulty, "steam_temperature") - col(clean, "steam_temperature"))[window]
    assert flue[:30].mean() > 5 * step_spread(col(clean, "flue_gas_temperature"))
    assert flue[-30:].mean() > flue[:30].mean()  # grows
    assert steam.mean() < -2.0
    assert 130 < col(faulty, "flue_gas_temperature")[window].max() < 200  # not absurd


def test_faults_keep_readings_physical() -> None:
    events = [
        FaultEvent("spike", 500 + 300 * i, 700 + 300 * i, name, magnitude=1.5)
        for i, name in enumerate(NAMES)
    ]
    values = ThermalUnitSimulator(seed=2).generate(3200, events).values
    for i, spec in enumerate(THERMAL_UNIT_SENSORS):
        assert spec.lo <= values[:, i].min() and values[:, i].max() <= spec.hi


# -- ground truth, stream, CSV ---------------------------------------------------------


def test_labels_are_the_union_of_events_and_events_are_clipped_to_the_run() -> None:
    events = [
        FaultEvent("drift", 100, 250, "load"),
        FaultEvent("fouling", 200, 300),  # overlaps the drift
        FaultEvent("stuck", 900, 1200, "steam_pressure"),  # runs past the end
        FaultEvent("spike", 1500, 1600, "load"),  # starts after the end
    ]
    result = ThermalUnitSimulator(seed=0).generate(1000, events)
    expected = np.zeros(1000, dtype=np.int8)
    for e in events:
        expected[e.start : min(e.end, 1000)] = 1
    np.testing.assert_array_equal(result.labels, expected)
    assert [(e.kind, e.start, e.end) for e in result.events] == [
        ("drift", 100, 250),
        ("fouling", 200, 300),
        ("stuck", 900, 1000),
    ]
    kinds = result.fault_kind_per_step()
    assert (kinds[99], kinds[100], kinds[220], kinds[260], kinds[950]) == (
        "",
        "drift",
        "drift+fouling",
        "fouling",
        "stuck",
    )


def test_stream_rows_equal_generate_rows() -> None:
    events = [
        FaultEvent("stuck", 1024, 1100, "steam_temperature"),  # starts on a block boundary
        FaultEvent("stuck", 2000, 2100, "load"),  # crosses a block boundary
        FaultEvent("bearing_degradation", 1000, 1500),
        FaultEvent("spike", 2500, 2600, "feedwater_flow"),
    ]
    sim = ThermalUnitSimulator(seed=11, day_seconds=3600.0)
    generated = sim.generate(3000, events)
    rows = list(sim.stream(events, n_steps=3000))
    assert len(rows) == 3000
    np.testing.assert_array_equal(np.array([r[0] for r in rows]), generated.timestamps)
    np.testing.assert_array_equal(np.stack([r[1] for r in rows]), generated.values)
    np.testing.assert_array_equal(np.array([r[2] for r in rows]), generated.labels)
    assert isinstance(rows[0][0], float) and isinstance(rows[0][2], int)


def test_endless_stream_and_shorter_runs_are_prefixes() -> None:
    sim = ThermalUnitSimulator(seed=3)
    long = sim.generate(2500)
    head = list(itertools.islice(sim.stream(), 2500))
    np.testing.assert_array_equal(np.stack([r[1] for r in head]), long.values)
    np.testing.assert_array_equal(sim.generate(700).values, long.values[:700])


def test_sensor_subset_keeps_each_sensors_values() -> None:
    picked = (THERMAL_UNIT_SENSORS[4], THERMAL_UNIT_SENSORS[0], THERMAL_UNIT_SENSORS[7])
    full = ThermalUnitSimulator(seed=6).generate(1200)
    subset = ThermalUnitSimulator(seed=6, sensors=picked).generate(1200)
    assert subset.values.shape == (1200, 3)
    np.testing.assert_array_equal(subset.values, full.values[:, [4, 0, 7]])
    with pytest.raises(ValueError, match="sensor"):
        ThermalUnitSimulator(sensors=picked).generate(
            100, [FaultEvent("spike", 1, 5, "steam_pressure")]
        )


def test_csv_round_trip(tmp_path: Path) -> None:
    events = [FaultEvent("spike", 50, 80, "load"), FaultEvent("tube_leak", 120, 160)]
    result = ThermalUnitSimulator(seed=1, step_seconds=0.5).generate(200, events)
    path = tmp_path / "run.csv"
    result.to_csv(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["timestamp", *NAMES, "label", "fault_kind"]
        rows = list(reader)
    assert len(rows) == 200
    timestamps = [datetime.fromisoformat(r["timestamp"]) for r in rows]
    assert all(t.utcoffset() == timedelta(0) for t in timestamps)
    np.testing.assert_allclose([t.timestamp() for t in timestamps], result.timestamps, atol=1e-3)
    values = np.array([[float(r[n]) for n in NAMES] for r in rows])
    np.testing.assert_array_equal(values, result.values)  # exact: shortest round-trip floats
    np.testing.assert_array_equal([int(r["label"]) for r in rows], result.labels)
    assert [r["fault_kind"] for r in rows] == result.fault_kind_per_step()
    assert rows[60]["fault_kind"] == "spike" and rows[130]["fault_kind"] == "tube_leak"
    assert rows[0]["timestamp"] == "2026-01-01T00:00:00.000Z"


def test_generate_is_fast() -> None:
    sim = ThermalUnitSimulator(seed=0)
    faults = random_fault_schedule(50_000, 40, seed=0)
    began = time.perf_counter()
    result = sim.generate(50_000, faults)
    elapsed = time.perf_counter() - began
    assert result.values.shape == (50_000, 8)
    assert elapsed < 2.0, f"generate(50_000) took {elapsed:.2f} s"


# -- events and schedules --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "melt", "start": 0, "end": 5, "sensor": "load"},
        {"kind": "spike", "start": 5, "end": 5, "sensor": "load"},
        {"kind": "spike", "start": -1, "end": 5, "sensor": "load"},
        {"kind": "spike", "start": 0, "end": 5},
        {"kind": "fouling", "start": 0, "end": 5, "sensor": "load"},
        {"kind": "drift", "start": 0, "end": 5, "sensor": "load", "magnitude": 0.0},
    ],
)
def test_invalid_fault_events_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultEvent(**kwargs)  # type: ignore[arg-type]


def test_fault_event_dict_round_trip() -> None:
    for event in (FaultEvent("drift", 3, 9, "load", 1.25), FaultEvent("tube_leak", 0, 4)):
        data = event.to_dict()
        assert set(data) == {"kind", "start", "end", "sensor", "magnitude"}
        assert FaultEvent.from_dict(data) == event


def check_schedule(
    events: list[FaultEvent], n_steps: int, warmup: int, gap: int, min_len: int, max_len: int
) -> None:
    starts = [e.start for e in events]
    assert starts == sorted(starts)
    for e in events:
        assert warmup <= e.start < e.end <= n_steps
        assert min_len <= e.length <= max_len
        assert (e.sensor is None) == (e.kind in PROCESS_FAULT_KINDS)
        assert 0.8 <= e.magnitude <= 1.5
    for before, after in itertools.pairwise(events):
        assert after.start - before.end >= gap


def test_random_schedule_covers_every_kind_and_is_reproducible() -> None:
    events = random_fault_schedule(60_000, 21, seed=4)
    check_schedule(events, 60_000, warmup=300, gap=120, min_len=30, max_len=300)
    assert len(events) == 21
    assert {e.kind for e in events} == set(FAULT_KINDS)
    assert {e.sensor for e in events if e.kind in SENSOR_FAULT_KINDS} <= set(NAMES)
    assert random_fault_schedule(60_000, 21, seed=4) == events
    assert random_fault_schedule(60_000, 21, seed=5) != events
    only = random_fault_schedule(20_000, 6, seed=1, kinds=["stuck", "fouling"], sensors=["load"])
    assert {e.kind for e in only} == {"stuck", "fouling"}
    assert {e.sensor for e in only} == {"load", None}


@settings(max_examples=60, deadline=None)
@given(
    n_events=st.integers(0, 12),
    min_len=st.integers(1, 50),
    extra_len=st.integers(0, 300),
    warmup=st.integers(0, 500),
    gap=st.integers(0, 200),
    slack=st.integers(0, 5000),
    seed=st.integers(0, 2**16),
)
def test_random_schedule_fits_whenever_possible(
    n_events: int, min_len: int, extra_len: int, warmup: int, gap: int, slack: int, seed: int
) -> None:
    max_len = min_len + extra_len
    n_steps = warmup + n_events * min_len + max(n_events - 1, 0) * gap + slack
    events = random_fault_schedule(
        n_steps, n_events, seed=seed, min_len=min_len, max_len=max_len, warmup=warmup, gap=gap
    )
    assert len(events) == n_events
    check_schedule(events, n_steps, warmup, gap, min_len, max_len)


def test_random_schedule_refuses_what_cannot_fit() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        random_fault_schedule(1000, 5, min_len=100, warmup=300, gap=120)
    with pytest.raises(ValueError):
        random_fault_schedule(10_000, 3, kinds=["melt"])


def test_generate_dataset_is_labelled_and_seeded() -> None:
    data = generate_dataset(20_000, 10, seed=2)
    assert len(data.events) == 10
    assert 0.02 < data.labels.mean() < 0.3
    again = generate_dataset(20_000, 10, seed=2)
    np.testing.assert_array_equal(data.values, again.values)
    assert data.events == again.events
    # the compressed day: a full load cycle within the first hour
    assert np.ptp(data.values[:3600, COL["load"]]) > 150
    assert dataclasses.asdict(data.events[0])["kind"] in FAULT_KINDS


def test_fleet_is_units_one_after_another_on_one_grid() -> None:
    from edge_agent.tools.simulator import generate_fleet

    fleet = generate_fleet(3, 6000, 6, seed=7, burn_in=600)
    assert fleet.values.shape == (6000, len(THERMAL_UNIT_SENSORS))
    assert np.all(np.diff(fleet.timestamps) == 1.0)
    # labels are exactly the union of the (re-based) events
    expected = np.zeros(6000, dtype=np.int8)
    for e in fleet.events:
        expected[e.start : e.end] = 1
    np.testing.assert_array_equal(fleet.labels, expected)
    assert len(fleet.events) == 6
    # each segment is a different unit: their mean levels differ
    means = fleet.values.reshape(3, 2000, -1).mean(axis=1)
    assert not np.allclose(means[0], means[1])
    # reproducible
    np.testing.assert_array_equal(
        generate_fleet(3, 6000, 6, seed=7, burn_in=600).values, fleet.values
    )
