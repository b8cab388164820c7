"""LSTM autoencoder: training, the scoring model, and the ONNX graph the agent runs.

Real (tiny) trainings and real tf2onnx conversions: the ONNX graph must give the same
errors as Keras, keep scaling inside, keep real LSTM ops, and score a broken window high.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray

from edge_agent.pipeline.windows import sliding_windows

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from training import lstm_ae

pytestmark = pytest.mark.slow
lstm_ae.set_tf_threads(2)

WINDOW, SENSORS = 20, 4
SHIPPED_STEPS = 600


def correlated_series(steps: int, n_sensors: int, seed: int) -> NDArray[np.float32]:
    """Sensors that share two slow sines through a fixed mixing, on very different scales."""
    mix = np.random.default_rng(1234).normal(size=(2, n_sensors))
    offsets = np.linspace(10.0, 500.0, n_sensors)
    spreads = np.linspace(0.5, 40.0, n_sensors)
    t = np.arange(steps, dtype=np.float64) + 977.0 * seed
    base = np.stack([np.sin(2 * np.pi * t / 97.0), np.sin(2 * np.pi * t / 31.0 + 1.0)], axis=1)
    noise = np.random.default_rng(seed).normal(scale=0.05, size=(steps, n_sensors))
    return (offsets + spreads * (base @ mix + noise)).astype(np.float32)


def ort_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_errors(
    sess: ort.InferenceSession, windows: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    window_error, sensor_error = sess.run(
        ["window_error", "sensor_error"], {"window": np.ascontiguousarray(windows)}
    )
    return window_error, sensor_error


@dataclass
class Trained:
    scoring_model: Any
    history: dict[str, list[float]]
    lines: list[str]
    center: NDArray[np.float32]
    scale: NDArray[np.float32]
    test_windows: NDArray[np.float32]


@dataclass
class Exported(Trained):
    onnx_path: Path
    info: dict[str, Any]


def train(window: int, n_sensors: int, steps: int, epochs: int) -> Trained:
    train = correlated_series(steps, n_sensors, seed=0)
    val = correlated_series(steps // 4, n_sensors, seed=1)
    test = correlated_series(steps // 4, n_sensors, seed=2)
    center, scale = lstm_ae.fit_scaler(train)
    lines: list[str] = []
    model, history = lstm_ae.fit_lstm_ae(
        sliding_windows(train, window),
        sliding_windows(val, window),
        center,
        scale,
        epochs=epochs,
        batch_size=64,
        patience=3,
        seed=0,
        max_train_windows=steps // 2,
        progress=lines.append,
    )
    test_windows = np.array(sliding_windows(test, window)[::3])
    return Trained(model, history, lines, center, scale, test_windows)


def train_and_export(tmp: Path, window: int, n_sensors: int, steps: int, epochs: int) -> Exported:
    trained = train(window, n_sensors, steps, epochs)
    path = tmp / "lstm_ae.onnx"
    info = lstm_ae.export_lstm_ae(trained.scoring_model, window, n_sensors, path)
    return Exported(**vars(trained), onnx_path=path, info=info)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return train_and_export(tmp_path_factory.mktemp("lstm_small"), WINDOW, SENSORS, 1600, 4)


@pytest.fixture(scope="module")
def shipped_shape(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return train_and_export(tmp_path_factory.mktemp("lstm_60x8"), 60, 8, SHIPPED_STEPS, 1)


def test_fit_scaler_is_per_sensor_mean_and_std_with_positive_scale() -> None:
    rng = np.random.default_rng(0)
    series = np.column_stack(
        [rng.normal(5.0, 2.0, 500), rng.normal(-300.0, 0.1, 500), np.full(500, 7.0)]
    )
    center, scale = lstm_ae.fit_scaler(series)
    assert center.dtype == np.float32 and scale.dtype == np.float32
    np.testing.assert_allclose(center, series.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(scale[:2], series[:, :2].std(axis=0), rtol=1e-6)
    assert scale[2] == 1.0  # a constant sensor must not divide by zero in the graph
    with pytest.raises(ValueError):
        lstm_ae.fit_scaler(np.array([[1.0, np.nan], [2.0, 3.0]]))


def test_autoencoder_has_the_documented_layers() -> None:
    model = lstm_ae.build_autoencoder(WINDOW, SENSORS)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["LSTM", "LSTM", "RepeatVector", "LSTM", "LSTM", "Dense"]
    assert [layer.units for layer in model.layers if hasattr(layer, "units")][:4] == [
        64,
        32,
        32,
        64,
    ]
    assert model.output_shape == (None, WINDOW, SENSORS)


def test_training_reports_each_epoch_and_learns(small: Exported) -> None:
    h = small.history
    assert set(h) == {"loss", "val_loss", "lr"}
    epochs = len(h["loss"])
    assert 1 <= epochs <= 4 and len(h["val_loss"]) == epochs and len(h["lr"]) == epochs
    assert all(lr > 0 for lr in h["lr"])
    assert sum(line.startswith("lstm_ae epoch ") for line in small.lines) == epochs
    assert min(h["val_loss"]) < 0.5 * h["val_loss"][0] or min(h["loss"]) < 0.5 * h["loss"][0]


def test_export_info_and_graph_io_match_the_contract(small: Exported) -> None:
    assert {k: v for k, v in small.info.items() if k != "convert_seconds"} == {
        "input_name": "window",
        "score_output": "window_error",
        "per_sensor_output": "sensor_error",
        "score_sign": 1,
        "input_shape": [None, WINDOW, SENSORS],
    }
    assert small.info["convert_seconds"] > 0
    sess = ort_session(small.onnx_path)
    (inp,) = sess.get_inputs()
    assert inp.name == "window" and inp.type == "tensor(float)"
    assert not isinstance(inp.shape[0], int) and inp.shape[1:] == [WINDOW, SENSORS]
    outs = {o.name: o for o in sess.get_outputs()}
    assert set(outs) == {"window_error", "sensor_error"}
    assert all(o.type == "tensor(float)" for o in outs.values())
    assert len(outs["window_error"].shape) == 1
    assert len(outs["sensor_error"].shape) == 2 and outs["sensor_error"].shape[1] == SENSORS
    window_error, sensor_error = ort_errors(sess, small.test_windows[:7])
    assert window_error.shape == (7,) and sensor_error.shape == (7, SENSORS)


def test_graph_keeps_real_lstm_ops_and_opset(small: Exported) -> None:
    proto = onnx.load(str(small.onnx_path))
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops["LSTM"] == 4
    assert ops["Loop"] == 0 and ops["Scan"] == 0
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_onnx_errors_equal_keras_errors(small: Exported) -> None:
    sess = ort_session(small.onnx_path)
    windows = small.test_windows
    k_window, k_sensor = lstm_ae.keras_errors(small.scoring_model, windows)
    o_window, o_sensor = ort_errors(sess, windows)
    assert np.abs(o_window - k_window).max() < 1e-4
    assert np.abs(o_sensor - k_sensor).max() < 1e-4
    empty_window, empty_sensor = lstm_ae.keras_errors(small.scoring_model, windows[:0])
    assert empty_window.shape == (0,) and empty_sensor.shape == (0, SENSORS)
    one_window, one_sensor = ort_errors(sess, windows[:1])  # the agent's single-window path
    assert np.abs(one_window - k_window[:1]).max() < 1e-4
    assert np.abs(one_sensor - k_sensor[:1]).max() < 1e-4


def test_window_error_is_mean_of_sensor_error(small: Exported) -> None:
    o_window, o_sensor = ort_errors(ort_session(small.onnx_path), small.test_windows)
    np.testing.assert_allclose(o_window, o_sensor.mean(axis=1), rtol=1e-5, atol=1e-7)
    k_window, k_sensor = lstm_ae.keras_errors(small.scoring_model, small.test_windows)
    np.testing.assert_allclose(k_window, k_sensor.mean(axis=1), rtol=1e-5, atol=1e-7)


def test_scaling_is_inside_the_scoring_model(small: Exported) -> None:
    """Raw windows in; errors equal the autoencoder's on windows scaled by hand."""
    autoencoder = small.scoring_model.get_layer("lstm_autoencoder")
    raw = small.test_windows[:32]
    scaled = (raw - small.center) / small.scale
    recon = autoencoder.predict(scaled, verbose=0)
    expected_sensor = ((recon - scaled) ** 2).mean(axis=1)
    o_window, o_sensor = ort_errors(ort_session(small.onnx_path), raw)
    np.testing.assert_allclose(o_sensor, expected_sensor, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(o_window, expected_sensor.mean(axis=1), rtol=1e-4, atol=1e-5)


def test_injected_anomaly_scores_higher_and_names_the_sensor(small: Exported) -> None:
    sess = ort_session(small.onnx_path)
    normal = small.test_windows
    broken = normal[:5].copy()
    broken[:, WINDOW // 2 :, 2] += 6.0 * small.scale[2]  # sensor 2 steps up by 6 sigma
    n_window, _ = ort_errors(sess, normal)
    b_window, b_sensor = ort_errors(sess, broken)
    assert b_window.min() > n_window.max()
    assert (b_sensor.argmax(axis=1) == 2).all()


def test_shipped_window_shape_converts_and_matches(shipped_shape: Exported) -> None:
    sess = ort_session(shipped_shape.onnx_path)
    (inp,) = sess.get_inputs()
    assert inp.name == "window" and inp.shape[1:] == [60, 8]
    windows = shipped_shape.test_windows
    k_window, k_sensor = lstm_ae.keras_errors(shipped_shape.scoring_model, windows)
    o_window, o_sensor = ort_errors(sess, windows)
    assert o_window.shape == (len(windows),) and o_sensor.shape == (len(windows), 8)
    assert np.abs(o_window - k_window).max() < 1e-4
    assert np.abs(o_sensor - k_sensor).max() < 1e-4
    np.testing.assert_allclose(o_window, o_sensor.mean(axis=1), rtol=1e-5, atol=1e-7)


def test_training_is_deterministic_for_a_seed(shipped_shape: Exported) -> None:
    again = train(60, 8, SHIPPED_STEPS, 1)
    assert again.history == shipped_shape.history
    np.testing.assert_array_equal(
        lstm_ae.keras_errors(again.scoring_model, again.test_windows[:16])[0],
        lstm_ae.keras_errors(shipped_shape.scoring_model, shipped_shape.test_windows[:16])[0],
    )
