"""The custom Isolation Forest export must score like sklearn, stay small and convert fast."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import RobustScaler

from edge_agent.pipeline.features import compute_series_features, default_feature_spec
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names
from training.iforest import export_iforest, fit_iforest, iforest_to_onnx, scaler_params

SPEC = default_feature_spec(sensor_names(THERMAL_UNIT_SENSORS))
N_FEATURES = SPEC.n_features

# Operating point and how strongly each sensor follows three slow plant-wide factors
# (load demand, coal quality, fouling); the rest is per-sensor measurement noise.
_BASE = np.array([540.0, 165.0, 450.0, 4.0, 500.0, 130.0, 8.0, 70.0])
_FACTOR_GAIN = np.array([5.0, 3.0, 20.0, 0.5, 30.0, 4.0, 0.5, 2.0])
_NOISE = np.array([0.5, 0.3, 2.0, 0.05, 3.0, 0.4, 0.05, 0.2])


def plant_series(n_steps: int, seed: int) -> NDArray[np.float64]:
    """Correlated, slowly drifting readings of the 8 thermal-unit sensors."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(scale=0.1, size=(n_steps, 3))
    factors = np.zeros((n_steps, 3))
    for t in range(1, n_steps):
        factors[t] = 0.99 * factors[t - 1] + shocks[t]
    mixing = np.random.default_rng(1234).normal(size=(3, 8)) * _FACTOR_GAIN
    return _BASE + factors @ mixing + rng.normal(size=(n_steps, 8)) * _NOISE


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def onnx_outputs(model: onnx.ModelProto, rows: NDArray[np.float32]) -> tuple[NDArray, NDArray]:
    label, scores = session(model).run(["label", "scores"], {"X": rows})
    return label, scores


@pytest.fixture(scope="module")
def train_rows() -> NDArray[np.float32]:
    return compute_series_features(plant_series(20_000, seed=1), SPEC)


@pytest.fixture(scope="module")
def foreign_rows(train_rows: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows the forest never saw: another day, sensor faults, drift and wild values."""
    rng = np.random.default_rng(7)
    other_day = compute_series_features(plant_series(3_000, seed=99), SPEC)
    picked = train_rows[rng.integers(0, len(train_rows), 2_000)]
    scaled = picked * rng.uniform(0.5, 1.5, size=picked.shape).astype(np.float32)
    shifted = picked + rng.normal(scale=5.0, size=picked.shape).astype(np.float32)
    wild = rng.uniform(-1e4, 1e4, size=(500, N_FEATURES)).astype(np.float32)
    stuck = picked[:500].copy()
    stuck[:, 2::4] = 0.0  # rolling std of every sensor collapsed to zero: frozen transmitters
    return np.concatenate([other_day, scaled, shifted, wild, stuck]).astype(np.float32)


@pytest.fixture(scope="module")
def pipeline(train_rows: NDArray[np.float32]) -> Pipeline:
    return fit_iforest(train_rows, n_estimators=200, max_samples=256, seed=0)


@pytest.fixture(scope="module")
def exported(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("iforest") / "iforest.onnx"
    return path, export_iforest(pipeline, N_FEATURES, path)


@pytest.fixture(scope="module")
def model(exported: tuple[Path, dict]) -> onnx.ModelProto:
    return onnx.load(str(exported[0]))


def test_graph_is_one_tree_ensemble_plus_a_few_arithmetic_nodes(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert len(ops) <= 20, ops
    assert ops.count("TreeEnsembleRegressor") == 1
    (graph_input,) = model.graph.input
    assert graph_input.name == "X"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = graph_input.type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1] == N_FEATURES and not dims[0].HasField("dim_value")
    outputs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert outputs == {"label": onnx.TensorProto.INT64, "scores": onnx.TensorProto.FLOAT}


def test_export_reports_what_the_manifest_needs(
    exported: tuple[Path, dict], model: onnx.ModelProto
) -> None:
    _, info = exported
    assert {k: v for k, v in info.items() if k != "convert_seconds"} == {
        "input_name": "X",
        "score_output": "scores",
        "score_sign": -1,
        "input_shape": [None, N_FEATURES],
        "nodes": len(model.graph.node),
    }
    # skl2onnx's stock converter needs ~46 s for 200 trees.
    assert 0.0 < info["convert_seconds"] < 10.0


def test_scores_and_labels_match_sklearn_on_training_rows(
    pipeline: Pipeline, model: onnx.ModelProto, train_rows: NDArray[np.float32]
) -> None:
    label, scores = onnx_outputs(model, train_rows)
    assert scores.shape == (len(train_rows), 1) and scores.dtype == np.float32
    max_diff = np.abs(scores[:, 0] - pipeline.decision_function(train_rows)).max()
    assert max_diff < 1e-3, max_diff
    expected = pipeline.predict(train_rows)
    assert (expected == -1).any() and (expected == 1).any()  # both classes are exercised
    np.testing.assert_array_equal(label, expected)


def test_scores_and_labels_match_sklearn_out_of_distribution(
    pipeline: Pipeline, model: onnx.ModelProto, foreign_rows: NDArray[np.float32]
) -> None:
    label, scores = onnx_outputs(model, foreign_rows)
    max_diff = np.abs(scores[:, 0] - pipeline.decision_function(foreign_rows)).max()
    assert max_diff < 1e-3, max_diff
    expected = pipeline.predict(foreign_rows)
    assert (expected == -1).any() and (expected == 1).any()
    np.testing.assert_array_equal(label, expected)


def knife_edge_rows(pipeline: Pipeline, base: NDArray[np.float32], n: int) -> NDArray[np.float32]:
    """Rows with one feature placed within a few float32 ulps of a split threshold.

    This is where a converter that rounds thresholds to float32, or scales in a slightly
    different order than sklearn, sends a row down the wrong branch.
    """
    scaler, forest = pipeline.steps[0][1], pipeline.steps[1][1]
    rng = np.random.default_rng(3)
    center = scaler.center_ if scaler.center_ is not None else np.zeros(N_FEATURES)
    scale = scaler.scale_ if scaler.scale_ is not None else np.ones(N_FEATURES)
    rows = []
    for _ in range(n):
        estimator_index = rng.integers(len(forest.estimators_))
        tree = forest.estimators_[estimator_index].tree_
        node = rng.choice(np.flatnonzero(tree.children_left != -1))
        feature = forest.estimators_features_[estimator_index][tree.feature[node]]
        raw = np.float32(tree.threshold[node] * scale[feature] + center[feature])
        row = base[rng.integers(len(base))].copy()
        for steps in range(-3, 4):
            value = raw
            for _ in range(abs(steps)):
                value = np.nextafter(value, np.float32(np.inf if steps > 0 else -np.inf))
            row[feature] = value
            rows.append(row.copy())
    return np.asarray(rows, dtype=np.float32)


def test_rows_on_split_thresholds_take_sklearns_branch(
    pipeline: Pipeline, model: onnx.ModelProto, train_rows: NDArray[np.float32]
) -> None:
    rows = knife_edge_rows(pipeline, train_rows, 1_000)
    _, scores = onnx_outputs(model, rows)
    # A single row sent down another branch moves its score by ~1e-6 to ~2e-3; float32
    # rounding of the path-length sum and of the output stays below 1e-7.
    max_diff = np.abs(scores[:, 0] - pipeline.decision_function(rows)).max()
    assert max_diff < 1e-6, max_diff


def test_nan_features_take_sklearns_branch(
    pipeline: Pipeline, model: onnx.ModelProto, train_rows: NDArray[np.float32]
) -> None:
    rows = train_rows[:400].copy()
    rows[np.arange(300), np.arange(300) % N_FEATURES] = np.nan
    rows[300:, ::3] = np.nan
    label, scores = onnx_outputs(model, rows)
    assert np.abs(scores[:, 0] - pipeline.decision_function(rows)).max() < 1e-6
    np.testing.assert_array_equal(label, pipeline.predict(rows))


def test_contamination_offset_and_feature_subsampling_are_converted(
    train_rows: NDArray[np.float32], foreign_rows: NDArray[np.float32]
) -> None:
    pipe = Pipeline(
        [
            ("scaler", RobustScaler()),
            (
                "iforest",
                IsolationForest(
                    n_estimators=40,
                    max_samples=128,
                    max_features=0.5,
                    contamination=0.05,
                    random_state=4,
                ),
            ),
        ]
    ).fit(train_rows)
    assert pipe.steps[1][1].offset_ != -0.5
    rows = np.concatenate([train_rows[:3_000], foreign_rows])
    rows = np.concatenate([rows, knife_edge_rows(pipe, train_rows, 300)])
    label, scores = onnx_outputs(iforest_to_onnx(pipe, N_FEATURES), rows)
    assert np.abs(scores[:, 0] - pipe.decision_function(rows)).max() < 1e-6
    np.testing.assert_array_equal(label, pipe.predict(rows))


@pytest.mark.parametrize(
    ("with_centering", "with_scaling"), [(False, False), (True, False), (False, True)]
)
def test_scaler_variants_convert_exactly(
    train_rows: NDArray[np.float32], with_centering: bool, with_scaling: bool
) -> None:
    pipe = Pipeline(
        [
            ("scaler", RobustScaler(with_centering=with_centering, with_scaling=with_scaling)),
            ("iforest", IsolationForest(n_estimators=20, random_state=0)),
        ]
    ).fit(train_rows)
    rows = np.concatenate([train_rows[:2_000], knife_edge_rows(pipe, train_rows, 200)])
    label, scores = onnx_outputs(iforest_to_onnx(pipe, N_FEATURES), rows)
    assert np.abs(scores[:, 0] - pipe.decision_function(rows)).max() < 1e-6
    np.testing.assert_array_equal(label, pipe.predict(rows))


def test_stock_skl2onnx_converters_are_restored(pipeline: Pipeline) -> None:
    from skl2onnx._supported_operators import sklearn_operator_name_map

    iforest_to_onnx(pipeline, N_FEATURES)
    assert sklearn_operator_name_map[IsolationForest] == "SklearnIsolationForest"
    assert sklearn_operator_name_map[RobustScaler] == "SklearnRobustScaler"


def test_single_row_scoring_is_fast(
    model: onnx.ModelProto, train_rows: NDArray[np.float32]
) -> None:
    sess = session(model)
    rows = [train_rows[i : i + 1] for i in range(300)]
    for row in rows[:30]:
        sess.run(["scores"], {"X": row})
    timings = []
    for row in rows:
        start = time.perf_counter()
        sess.run(["scores"], {"X": row})
        timings.append(time.perf_counter() - start)
    # ~0.04 ms measured; the stock graph needs ~7 ms. Loose bound for a busy CI machine.
    assert float(np.median(timings)) < 2e-3


def test_wrong_feature_count_is_refused(pipeline: Pipeline) -> None:
    with pytest.raises(ValueError, match="features"):
        iforest_to_onnx(pipeline, N_FEATURES + 1)


def test_scaler_params_are_the_fitted_center_and_scale(pipeline: Pipeline) -> None:
    params = scaler_params(pipeline)
    scaler = pipeline.steps[0][1]
    assert params["center"] == [float(v) for v in scaler.center_]
    assert params["scale"] == [float(v) for v in scaler.scale_]
    assert len(params["center"]) == len(params["scale"]) == N_FEATURES


def test_fit_is_seeded_and_refuses_non_finite_rows(train_rows: NDArray[np.float32]) -> None:
    a = fit_iforest(train_rows[:5_000], n_estimators=20, seed=11)
    b = fit_iforest(train_rows[:5_000], n_estimators=20, seed=11)
    c = fit_iforest(train_rows[:5_000], n_estimators=20, seed=12)
    probe = train_rows[5_000:6_000]
    np.testing.assert_array_equal(a.decision_function(probe), b.decision_function(probe))
    assert not np.array_equal(a.decision_function(probe), c.decision_function(probe))
    bad = train_rows[:100].copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_iforest(bad)
