"""Sensor health: frozen and noisy transmitters, against limits learned from training data."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from handmade_models import THERMAL_NORMAL, build_model_set, normal_series

from edge_agent.config import AgentSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.engine import Engine
from edge_agent.pipeline.manifest import Manifest
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.sensor_health import (
    SensorHealth,
    change_roughness,
    longest_runs,
    roughness_floor,
    roughness_series,
)
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, SensorSpec

T0 = 1_714_564_800.0


def fit_dataset(values: Any, sensors: tuple[str, ...], step_seconds: float = 1.0, **kw: Any) -> Any:
    """A training Dataset of ``values`` (steps, sensors) from T0, as load_csv would give it."""
    from training.data import Dataset

    values = np.asarray(values, dtype=np.float64)
    return Dataset(
        timestamps=T0 + step_seconds * np.arange(len(values), dtype=np.float64),
        values=values,
        labels=None,
        sensors=sensors,
        step_seconds=step_seconds,
        source=Path("fit.csv"),
        sha256="0" * 64,
        **kw,
    )


NAMES = [s.name for s in THERMAL_UNIT_SENSORS]


def test_frozen_counts_exact_repeats_and_ignores_carried_values() -> None:
    h = SensorHealth([SensorSpec("a", "", frozen_limit_steps=3), SensorSpec("b", "")], rolling=5)
    rows = [[1.0, 5.0], [1.0, 5.0], [1.0, 5.0], [1.0, 6.0], [2.0, 6.0]]
    got = [h.frozen("u", np.array(r, np.float32), ()) for r in rows]
    assert got == [[], [], [0], [0], []]  # b has no limit: never frozen
    # a carried value (missing reading) neither extends nor ends a run
    h2 = SensorHealth([SensorSpec("a", "", frozen_limit_steps=3)], rolling=5)
    seq = [([1.0], ()), ([1.0], (0,)), ([1.0], (0,)), ([1.0], ())]
    assert [h2.frozen("u", np.array(r, np.float32), c) for r, c in seq] == [[], [], [], []]
    assert h2.frozen("u", np.array([1.0], np.float32), ()) == [0]


def test_noisy_compares_the_windows_roughness_with_the_learned_limit() -> None:
    rng = np.random.default_rng(1)
    calm = 10 + rng.normal(0, 0.1, (1, 30, 1))
    loud = 10 + rng.normal(0, 1.0, (1, 30, 1))
    h = SensorHealth([SensorSpec("a", "", roughness_hi=0.5)], rolling=10)
    assert h.noisy(np.concatenate([calm, loud]).astype(np.float32))[:, 0].tolist() == [False, True]


def test_training_statistics_match_what_the_agent_computes() -> None:
    x = np.array([[1, 5], [1, 5], [1, 6], [2, 6], [2, 6], [2, 6]], dtype=np.float64)
    assert longest_runs(x).tolist() == [3, 4]
    rng = np.random.default_rng(2)
    series = rng.normal(0, 1, (50, 2))
    rough = roughness_series(series, 10)
    windows = np.lib.stride_tricks.sliding_window_view(series, 10, axis=0).transpose(0, 2, 1)
    expected = np.diff(windows.astype(np.float32).astype(np.float64), axis=1).std(axis=1)
    np.testing.assert_allclose(rough, expected)
    # the trimmed roughness training places limits on is the one the agent judges
    trimmed = roughness_series(series, 10, trim=1)
    assert (trimmed < rough).all()  # white noise: leaving out the largest change lowers it
    median = np.median(trimmed, axis=0)
    spec = [
        SensorSpec(n, "", roughness_hi=float(m), roughness_trim=1)
        for n, m in zip("ab", median, strict=True)
    ]
    flags = SensorHealth(spec, rolling=10).noisy(windows.astype(np.float32))
    assert np.array_equal(flags, trimmed > median)


def test_trimmed_roughness_leaves_out_each_columns_largest_changes() -> None:
    rng = np.random.default_rng(3)
    changes = rng.normal(0, 1, (40, 9, 3))
    # no trim: exactly numpy's std (sets trained before trimming are judged as they were)
    assert np.array_equal(change_roughness(changes, 0, axis=1), changes.std(axis=1))
    mixed = change_roughness(changes, np.array([0, 1, 2]), axis=1)
    for trims, got in (
        ((0, 1, 2), mixed),
        ((1, 1, 1), change_roughness(changes, 1, axis=1)),  # one trim for all: its own path
        ((2, 2, 2), change_roughness(changes, 2, axis=1)),
    ):
        for i in range(len(changes)):
            for c, k in enumerate(trims):
                col = changes[i, :, c]
                kept = col[np.argsort(-np.abs(col), kind="stable")[k:]]
                assert got[i, c] == pytest.approx(kept.std(), rel=1e-12)


def test_a_step_in_level_is_not_noise_but_spikes_and_noise_are() -> None:
    rng = np.random.default_rng(4)
    base = 10 + rng.normal(0, 0.1, (3, 30, 1))
    step, spike, loud = base.copy(), base.copy(), base.copy()
    step[1, 25:, 0] += 2.0  # one change of 20 noise widths: the level moved
    spike[2, 25, 0] += 2.0  # up and back: two large changes
    loud[0, 20:, 0] += rng.normal(0, 1.0, 10)
    windows = np.concatenate([step[1:2], spike[2:3], loud[0:1]]).astype(np.float32)
    trimmed = SensorHealth([SensorSpec("a", "", roughness_hi=0.5, roughness_trim=1)], rolling=10)
    assert trimmed.noisy(windows)[:, 0].tolist() == [False, True, True]
    untrimmed = SensorHealth([SensorSpec("a", "", roughness_hi=0.5)], rolling=10)
    assert untrimmed.noisy(windows)[:, 0].tolist() == [True, True, True]


def test_a_manifest_cannot_trim_away_every_change(tmp_path: Path) -> None:
    sensors = [SensorSpec(s.name, s.unit, roughness_hi=1.0) for s in THERMAL_UNIT_SENSORS]
    manifest = Path(build_model_set(tmp_path, sensors, window=20)) / "manifest.json"
    doc = orjson.loads(manifest.read_bytes())
    rolling = doc["features"]["rolling"]
    doc["sensors"][0]["roughness_trim"] = rolling - 2
    Manifest.model_validate(doc)
    doc["sensors"][0]["roughness_trim"] = rolling - 1
    with pytest.raises(ValueError, match="roughness_trim leaves fewer than one"):
        Manifest.model_validate(doc)


def _engine(tmp_path: Path) -> Engine:
    # white noise of sd s has a roughness of about 1.4 s: 3 s is quiet for healthy data
    sensors = [
        SensorSpec(
            s.name,
            s.unit,
            s.lo,
            s.hi,
            frozen_limit_steps=20,
            roughness_hi=3 * THERMAL_NORMAL[s.name][1],
        )
        for s in THERMAL_UNIT_SENSORS
    ]
    model_set = ModelSet.load(build_model_set(tmp_path, sensors, window=20))
    settings = AgentSettings(agent_id="t", units=[{"name": "u1"}], alarm={"on_delay": 3})
    return Engine(settings, model_set, Metrics(), _Quiet())


class _Quiet:
    def debug(self, *a: Any, **k: Any) -> None: ...

    info = warning = debug


def _run(engine: Engine, rows: np.ndarray) -> list[Any]:
    alerts = []
    for i, row in enumerate(rows):
        ts = T0 + i
        payload = orjson.dumps({"ts": ts, "values": dict(zip(NAMES, row.tolist(), strict=True))})
        engine.handle_message("plant/plant1/u1/telemetry", payload, ts)
        alerts += engine.tick(ts + 0.01).alerts
    return alerts


def test_a_stuck_transmitter_raises_bad_quality_frozen(tmp_path: Path) -> None:
    rows = normal_series(80, seed=4)
    rows[30:70, 1] = rows[29, 1]  # steam_pressure stuck for 40 steps (limit 20)
    bad = [a for a in _run(_engine(tmp_path), rows) if a.kind == "bad_quality"]
    assert [(a.state, a.sensor, a.quality) for a in bad][:1] == [
        ("raised", "steam_pressure", "frozen")
    ]
    assert bad[0].ts == T0 + 29 + 20 - 1 + 2  # run reaches 20 at step 48, on_delay 3
    assert "frozen" in (bad[0].message or "")


def test_a_noisy_transmitter_raises_bad_quality_noisy(tmp_path: Path) -> None:
    rows = normal_series(80, seed=5)
    rng = np.random.default_rng(6)
    rows[40:70, 2] += rng.normal(0, 40.0, 30)  # feedwater_flow noise (normal sd 3)
    bad = [a for a in _run(_engine(tmp_path), rows) if a.kind == "bad_quality"]
    assert bad and (bad[0].sensor, bad[0].quality) == ("feedwater_flow", "noisy")


def test_training_places_a_trimmed_limit_that_a_level_step_stays_under() -> None:
    from training.model_set import sensor_entries

    rng = np.random.default_rng(8)
    fit = 5.0 + rng.normal(0, 0.05, (20_000, 1))
    data = fit_dataset(fit, ("pressure",))
    (spec,) = sensor_entries(data, slice(0, len(fit)), {}, rolling=10)
    assert spec.roughness_trim == 1 and spec.roughness_hi is not None
    later = 5.0 + rng.normal(0, 0.05, (3, 10, 1))
    later[0, 5:, 0] += 1.0  # the level steps by 20 noise widths (the process moved)
    later[1, :, 0] += rng.normal(0, 0.3, 10)  # the transmitter turns noisy (sd x 6 more)
    health = SensorHealth([spec], rolling=10)
    assert health.noisy(later.astype(np.float32))[:, 0].tolist() == [False, True, False]
    # untrimmed, that step's window is rougher than the limit: it would be called noise
    assert np.diff(later[0, :, 0]).std() > spec.roughness_hi


def test_the_floor_is_half_a_window_of_typical_moves() -> None:
    x = np.zeros((40, 2))
    x[::7, 0] = 0.5  # a held signal that moves by 0.5 now and then (and back)
    x[:, 1] = 3.0  # one that never moved
    floor = roughness_floor(x, rolling=10, trim=1)
    # 9 changes, 4 of them 0.5: the largest trimmed leaves 3 of 0.5 and 5 zeros
    assert floor[0] == pytest.approx(0.5 * np.sqrt(3 / 8 - (3 / 8) ** 2))
    assert floor[1] == 0.0


def test_a_held_signal_gets_a_limit_its_ordinary_moves_stay_under() -> None:
    """A valve position that moves only past a 1 % deadband, in 0.5 % steps: with its one
    move per window trimmed, its fit roughness is exactly 0 everywhere. Training must still
    write a positive limit (it once wrote -8e-21 and the manifest refused it after the whole
    training) that the valve's next two moves in a window do not exceed."""
    from training.model_set import sensor_entries

    rng = np.random.default_rng(9)
    steps = 20_000
    demand = 60 + np.cumsum(rng.normal(0, 0.02, steps))
    valve = np.empty(steps)
    held = demand[0]
    for i, d in enumerate(demand):
        held = d if abs(d - held) > 1.0 else held
        valve[i] = round(held * 2) / 2
    constant = np.full(steps, 7.0)
    values = np.stack([valve, constant], axis=1)
    data = fit_dataset(values, ("valve", "aux"))
    assert roughness_series(values, 10, trim=1)[:, 0].max() == 0.0  # the degenerate case
    valve_spec, aux_spec = sensor_entries(data, slice(0, steps), {}, rolling=10)
    assert valve_spec.roughness_hi is not None and valve_spec.roughness_hi > 0
    assert aux_spec.roughness_hi is None  # never moved: nothing to place a limit on
    health = SensorHealth([valve_spec], rolling=10)
    later = np.full((3, 10, 1), 61.0)
    later[0, 4:, 0] += 1.0  # two moves in one window: a faster ramp
    later[0, 7:, 0] += 1.0
    later[1, :, 0] += rng.normal(0, 1.0, 10)  # the transmitter turns noisy
    later[2, 5:, 0] -= 1.5  # one move
    assert health.noisy(later.astype(np.float32))[:, 0].tolist() == [False, True, False]


def test_a_signal_held_for_hours_in_the_fit_data_gets_no_frozen_check() -> None:
    """Twice the longest hold is only the longest steady spell training saw: a valve at base
    load holds longer the next day. Analog sensors keep their frozen limit."""
    from training.model_set import sensor_entries
    from training.pipeline import held_signal_warnings

    rng = np.random.default_rng(10)
    steps = 2_000  # of 10 s
    valve = np.full(steps, 80.0)
    valve[800:] = 80.0 + np.round(np.cumsum(rng.normal(0, 0.3, steps - 800)) * 2) / 2
    analog = 540.0 + rng.normal(0, 0.5, steps)
    data = fit_dataset(np.stack([valve, analog], axis=1), ("valve", "steam"), step_seconds=10.0)
    valve_spec, steam_spec = sensor_entries(data, slice(0, steps), {}, rolling=10)
    assert valve_spec.frozen_limit_steps is None  # held 800 steps = 2.2 h
    assert steam_spec.frozen_limit_steps == 20  # analog: never repeats, the 2 x rolling floor
    [warning] = held_signal_warnings([valve_spec.to_dict(), steam_spec.to_dict()])
    assert (
        warning.startswith("valve held one exact value for more than 1 h")
        and "no frozen" in warning
    )
    health = SensorHealth([valve_spec], rolling=10)
    row = np.array([80.0], dtype=np.float32)
    assert all(health.frozen("u", row, []) == [] for _ in range(5_000))


def test_health_limits_never_count_an_outage_as_a_held_value() -> None:
    """A transmitter that read 5.0 before a 500-step outage and 5.0 after it: the filled-in
    outage is no reading, so the longest hold is 30 steps, not 560."""
    from training.model_set import sensor_entries

    rng = np.random.default_rng(11)
    values = 5.0 + rng.normal(0, 0.05, (3_000, 1))
    values[1000:1560, 0] = 5.0  # held 30, out 500 (filled flat), held 30
    gap = np.zeros(3_000, dtype=bool)
    gap[1030:1530] = True
    data = fit_dataset(values, ("pressure",), gap_steps=gap)
    (spec,) = sensor_entries(data, slice(0, 3_000), {}, rolling=10)
    assert spec.frozen_limit_steps == 60
    (blind,) = sensor_entries(
        dataclasses.replace(data, gap_steps=None), slice(0, 3_000), {}, rolling=10
    )
    assert blind.frozen_limit_steps == 2 * 560  # what counting the outage would have placed
