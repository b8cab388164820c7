"""The one feature definition: batch (training) and window (agent) paths agree exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_agent.pipeline.features import (
    DERIVED_FEATURES,
    FeatureSpec,
    compute_features,
    compute_series_features,
    default_feature_spec,
)
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names
from edge_agent.pipeline.windows import RingBuffer, sliding_windows

THERMAL = sensor_names(THERMAL_UNIT_SENSORS)
SKAB = [
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
]


def series(n: int, s: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 + rng.normal(0.0, 5.0, (n, s)).cumsum(axis=0) * 0.1 + rng.normal(0, 1, (n, s))


def test_thermal_sensors_get_all_derived_features() -> None:
    spec = default_feature_spec(THERMAL)
    assert spec.derived == tuple(DERIVED_FEATURES)
    assert spec.n_features == len(spec.names) == 8 * 5 + len(DERIVED_FEATURES)


def test_foreign_sensor_set_gets_generic_features_only() -> None:
    spec = default_feature_spec(SKAB)
    assert spec.derived == ()
    assert spec.names[:5] == [
        f"Accelerometer1RMS__{k}" for k in ("value", "mean", "std", "delta", "roughness")
    ]


def test_roughness_is_the_spread_of_step_changes_and_sees_stuck_and_noisy_sensors() -> None:
    rng = np.random.default_rng(3)
    x = 50.0 + rng.normal(0, 1, (40, 1))
    x[20:30, 0] = x[19, 0]  # stuck
    x[30:40, 0] = 50.0 + rng.normal(0, 10, 10)  # noise burst
    spec = FeatureSpec(sensors=("a",), rolling=10, version=2)
    f = compute_series_features(x, spec)
    rough = f[:, spec.names.index("a__roughness")]
    # row j is the window ending at step j + 9
    np.testing.assert_allclose(rough[0], np.diff(x[0:10, 0]).std(), rtol=1e-5)
    assert rough[29 - 9] == 0.0  # steps 20..29 all equal
    assert rough[39 - 9] > 3 * rough[0]


def test_version_1_model_sets_keep_their_features() -> None:
    spec = FeatureSpec(sensors=("a", "b"), rolling=5, version=1)
    assert spec.n_features == 8 and "a__roughness" not in spec.names
    assert compute_series_features(series(20, 2), spec).shape == (16, 8)
    with pytest.raises(ValueError, match="feature version 9"):
        FeatureSpec(sensors=("a",), rolling=5, version=9)


def test_window_path_equals_series_path_bit_for_bit() -> None:
    x = series(300, 8)
    spec = default_feature_spec(THERMAL, rolling=10)
    batch = compute_series_features(x, spec)  # training
    windows = sliding_windows(x, 60)  # agent-shaped windows of the same data
    online = compute_features(windows, spec)
    # window i ends at step i+59; series row j belongs to step j+rolling-1
    np.testing.assert_array_equal(online, batch[60 - spec.rolling :])


def test_ring_buffer_features_equal_training_features() -> None:
    x = series(200, 8, seed=3)
    spec = default_feature_spec(THERMAL)
    expected = compute_series_features(x, spec)
    rb = RingBuffer(60, 8)
    got = []
    for row in x:
        rb.append(row)
        if rb.full:
            got.append(compute_features(rb.view()[None], spec)[0])
    np.testing.assert_array_equal(np.array(got), expected[60 - spec.rolling :])


def test_feature_values_are_what_the_docstring_says() -> None:
    spec = FeatureSpec(sensors=("a", "b"), rolling=4)
    w = np.array([[[1, 10], [2, 10], [3, 10], [6, 10]]], dtype=np.float32)
    f = compute_features(w, spec)[0]
    a_value, a_mean, a_std, a_delta = f[:4]
    assert (a_value, a_mean, a_delta) == (6.0, 3.0, 3.0)
    assert a_std == pytest.approx(np.std([1, 2, 3, 6]))
    assert list(f[4:]) == [10.0, 10.0, 0.0, 0.0]


def test_spec_round_trip_and_drift_detection() -> None:
    spec = default_feature_spec(THERMAL, rolling=12)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    stale = spec.to_dict()
    stale["names"] = [*stale["names"][:-1], "renamed"]
    with pytest.raises(ValueError, match="do not match"):
        FeatureSpec.from_dict(stale)


def test_invalid_specs_and_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="rolling"):
        FeatureSpec(sensors=("a",), rolling=1)
    with pytest.raises(ValueError, match="needs sensors"):
        FeatureSpec(sensors=("load",), derived=("vibration_to_load",))
    spec = FeatureSpec(sensors=("a", "b"), rolling=5)
    with pytest.raises(ValueError, match="shape"):
        compute_features(np.zeros((1, 10, 3)), spec)
    with pytest.raises(ValueError, match="at least"):
        compute_features(np.zeros((1, 4, 2)), spec)
    assert compute_series_features(np.zeros((3, 2)), spec).shape == (0, spec.n_features)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(12, 40), st.just(3)),
        elements=st.floats(-1e4, 1e4, allow_nan=False),
    )
)
def test_paths_agree_on_arbitrary_data(x: np.ndarray) -> None:
    spec = FeatureSpec(sensors=("a", "b", "c"), rolling=5)
    batch = compute_series_features(x, spec)
    online = compute_features(sliding_windows(x, 8), spec)
    np.testing.assert_array_equal(online, batch[8 - 5 :])
