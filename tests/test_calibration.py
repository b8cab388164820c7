"""Out-of-fold calibration: which windows fit which model, and where thresholds land."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.pipeline.ensemble import vote
from edge_agent.pipeline.manifest import ModelEntry, VotingEntry
from training.calibration import calibrate, plan, purged
from training.config import CalibrationSection


def entry(kind: str) -> ModelEntry:
    return ModelEntry(
        kind=kind,  # type: ignore[arg-type]
        file=f"{kind}.onnx",
        sha256="0" * 64,
        input_name="x",
        input_kind="features" if kind == "iforest" else "window",
        input_shape=[None, 3],
        score_output="s",
        threshold=0.0,
        score_scale=1.0,
    )


@pytest.mark.parametrize(("n", "window", "folds"), [(400, 30, 5), (1000, 60, 3), (97, 10, 4)])
def test_kfold_scores_every_fit_window_once_from_a_model_that_never_saw_it(
    n: int, window: int, folds: int
) -> None:
    p = plan(n, window, folds, kfold_max_windows=10_000, holdout=0.2)
    assert p.mode == "kfold" and len(p.folds) == folds
    ends = np.arange(window - 1, n)
    np.testing.assert_array_equal(p.scored, ends)  # every window, exactly once
    np.testing.assert_array_equal(p.final_train, ends)  # the final models see all of it
    for fold in p.folds:
        held_steps = set(range(int(fold.held_out[0]) - window + 1, int(fold.held_out[-1]) + 1))
        for t in fold.train:  # no training window shares a step with a held-out window
            assert held_steps.isdisjoint(range(int(t) - window + 1, int(t) + 1))
        assert len(fold.train) > 0


def test_large_data_uses_a_purged_holdout_tail() -> None:
    p = plan(50_000, 60, 5, kfold_max_windows=20_000, holdout=0.2)
    assert p.mode == "holdout" and len(p.folds) == 1
    fold = p.folds[0]
    assert fold.held_out[-1] == 49_999 and len(fold.held_out) == round((50_000 - 59) * 0.2)
    assert fold.train[-1] < fold.held_out[0] - 60 + 1
    np.testing.assert_array_equal(p.final_train, fold.train)


def test_kfold_is_the_default_however_long_a_plant_export_is_and_0_always_holds_out() -> None:
    bound = CalibrationSection().kfold_max_windows
    for steps in (8_640, 25_920, 60_480, 604_800):  # 1, 3, 7 days of 10 s; 7 days of 1 s
        assert plan(steps, 60, 5, bound, 0.2).mode == "kfold"
    assert plan(400, 20, 5, 0, 0.2).mode == "holdout"


def test_purged_drops_exactly_the_overlapping_windows() -> None:
    ends = np.arange(4, 30)
    kept = purged(ends, 10, 15, window=5)
    assert kept.tolist() == [4, 5, *range(19, 30)]


def test_too_little_data_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too few"):
        plan(12, 10, 5, 10_000, 0.2)


def test_calibration_places_thresholds_on_the_stated_quantile() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(20_000)
    scores = {"iforest": rng.normal(0, 1, 20_000), "lstm_ae": rng.lognormal(0, 1, 20_000)}
    entries = {k: entry(k) for k in scores}
    cal = calibrate(steps, scores, entries, {"iforest": 0.5, "lstm_ae": 0.5}, 0.99)
    for k, s in scores.items():
        assert cal.thresholds[k] == pytest.approx(np.quantile(s, 0.99))
        assert cal.centers[k] == pytest.approx(np.median(s))
        assert cal.scales[k] == pytest.approx(cal.thresholds[k] - cal.centers[k])
    # applied to the manifest entries, the ensemble flags the stated share of these steps
    voting = VotingEntry(
        weights={"iforest": 0.5, "lstm_ae": 0.5}, fused_threshold=cal.fused_threshold
    )
    v = vote(scores, cal.apply(entries), voting)
    assert v.ensemble_decision.mean() == pytest.approx(0.01, abs=0.001)
    for k in scores:
        assert v.decisions[k].mean() == pytest.approx(0.01, abs=0.001)


def test_constant_scores_get_a_positive_scale() -> None:
    cal = calibrate(
        np.arange(50),
        {"iforest": np.full(50, 0.3)},
        {"iforest": entry("iforest")},
        {"iforest": 1.0},
        0.995,
    )
    assert cal.scales["iforest"] > 0


def test_alarm_threshold_is_quiet_on_the_out_of_sample_data_plus_a_tail_margin() -> None:
    from training.calibration import alarm_threshold

    rng = np.random.default_rng(5)
    fused = rng.exponential(0.2, 20_000)
    fused[5000:5003] = [3.0, 3.1, 2.9]  # one sustained excursion: the quiet level is 2.9
    point = float(np.quantile(fused, 0.995))
    th, info = alarm_threshold(fused, point, on_delay=3, covered_days=0.25, alarms_per_day=0.1)
    assert info["quiet_level"] == pytest.approx(2.9)
    # the held level (min of 3) of an exponential(0.2) is exponential(0.2 / 3)
    assert info["tail_scale"] == pytest.approx(0.2 / 3, rel=0.25)
    assert th == pytest.approx(2.9 + info["tail_scale"] * np.log(10 / 0.25))
    # the held level is where the data stop raising alarms: 3 steps in a row above it
    held = np.lib.stride_tricks.sliding_window_view(fused, 3).min(axis=1)
    assert (held >= th).sum() == 0 and (held >= 2.9 - 1e-9).sum() >= 1
    # never lower than the point threshold, and no margin once the data cover the horizon
    th2, info2 = alarm_threshold(fused, 99.0, 3, covered_days=30.0, alarms_per_day=0.1)
    assert th2 == 99.0 and info2["margin"] == 0.0


def test_alarm_margin_of_a_short_export_rests_on_enough_of_the_tail() -> None:
    """400 steps: the top 1 % is 4 held levels. On a quantised transmitter those are often one
    value (a tail scale of 0: no margin at all); on any data 4 points make a scale that is
    off by half. The scale comes from at least ``MIN_TAIL_POINTS`` levels instead."""
    from training.calibration import MIN_TAIL_POINTS, alarm_threshold

    truth = 0.2 / 3  # the held level (min of 3) of an exponential(0.2)
    scales = []
    for seed in range(20):
        f = np.random.default_rng(seed).exponential(0.2, 400)
        _, info = alarm_threshold(f, 0.0, on_delay=3, covered_days=0.005, alarms_per_day=0.1)
        assert info["tail_points"] >= 0.9 * MIN_TAIL_POINTS  # held levels can tie
        scales.append(info["tail_scale"])
    assert all(0.5 * truth < s < 1.6 * truth for s in scales), scales
    # a transmitter that reads in steps of 0.3 (like SKAB's pressure): the top held levels tie
    rng = np.random.default_rng(1)
    stepped = np.round(rng.exponential(0.6, 400) / 0.3) * 0.3
    th, info = alarm_threshold(stepped, 0.0, 3, covered_days=0.005, alarms_per_day=0.1)
    assert info["tail_scale"] > 0.1 and th > info["quiet_level"] + 0.1 * np.log(10 / 0.005)
