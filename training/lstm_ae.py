"""LSTM autoencoder: train on scaled windows, score raw windows, export one ONNX graph.

The agent feeds raw sensor windows to onnxruntime, so scaling lives inside the scoring
model (and therefore inside the exported graph): a model set can never be paired with
the wrong scaler. The score is the reconstruction error in scaled units, per window and
per sensor; the per-sensor part tells an operator which sensor looks wrong.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from numpy.typing import NDArray

INPUT_NAME = "window"
SCORE_OUTPUT = "window_error"
PER_SENSOR_OUTPUT = "sensor_error"
ONNX_OPSET = 17
_SCALE_FLOOR = 1e-6
# Measured on simulator data (2 cores): lr 3e-3 with clipping reaches in 8 epochs of 6000
# windows the validation loss that lr 1e-3 reaches in 18 epochs of 10000 windows.
LEARNING_RATE = 3e-3
_SERIAL_PACKAGE = "edge_training"


def set_tf_threads(n: int) -> None:
    """Cap TensorFlow's thread pools; small boxes are shared with the agent and other jobs.

    TensorFlow only accepts this before its runtime starts. A later call asking for the
    current values is a no-op; one asking for different values warns instead of failing,
    because training still works, only with other thread counts.
    """
    n = max(1, int(n))
    wanted = {"intra": n, "inter": min(n, 2)}
    current = {
        "intra": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    if current == wanted:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(wanted["intra"])
        tf.config.threading.set_inter_op_parallelism_threads(wanted["inter"])
    except RuntimeError as exc:
        warnings.warn(
            f"TensorFlow threads already fixed at {current}, cannot set {wanted}: {exc}",
            RuntimeWarning,
            stacklevel=2,
        )


def fit_scaler(
    train_series: NDArray[np.floating[Any]],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-sensor center (mean) and scale (std) of a (steps, sensors) training series.

    A sensor that never moves gets scale 1 rather than 0 so the graph never divides by
    zero; its scaled value is then simply its deviation from the training constant.
    """
    x = np.asarray(train_series, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"train_series must be (steps >= 2, sensors), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("train_series contains NaN or infinite values")
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > _SCALE_FLOOR * np.maximum(1.0, np.abs(center)), scale, 1.0)
    return center.astype(np.float32), scale.astype(np.float32)


@keras.saving.register_keras_serializable(package=_SERIAL_PACKAGE)
class Standardize(keras.layers.Layer):  # type: ignore[misc]
    """(x - center) / scale with frozen per-sensor constants, so scaling travels with the model."""

    def __init__(self, center: list[float], scale: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.center_values = [float(v) for v in center]
        self.scale_values = [float(v) for v in scale]
        n = len(self.center_values)
        self.center = self.add_weight(
            shape=(n,),
            initializer=keras.initializers.Constant(self.center_values),
            trainable=False,
            name="center",
        )
        self.scale = self.add_weight(
            shape=(n,),
            initializer=keras.initializers.Constant(self.scale_values),
            trainable=False,
            name="scale",
        )

    def call(self, inputs: Any) -> Any:
        return (inputs - self.center) / self.scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "center": self.center_values, "scale": self.scale_values}


@keras.saving.register_keras_serializable(package=_SERIAL_PACKAGE)
class SquaredError(keras.layers.Layer):  # type: ignore[misc]
    """Element-wise (reconstruction - target)^2."""

    def call(self, inputs: list[Any]) -> Any:
        target, reconstruction = inputs
        return ops.square(reconstruction - target)


@keras.saving.register_keras_serializable(package=_SERIAL_PACKAGE)
class MeanOver(keras.layers.Layer):  # type: ignore[misc]
    """Mean over fixed axes; a named layer so the exported output keeps a readable name."""

    def __init__(self, axes: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axes = [int(a) for a in axes]

    def call(self, inputs: Any) -> Any:
        return ops.mean(inputs, axis=tuple(self.axes))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axes": self.axes}


def build_autoencoder(window: int, n_sensors: int) -> keras.Model:
    """LSTM(64) → LSTM(32) → repeat → LSTM(32) → LSTM(64) → per-step Dense(n_sensors).

    The last layer is a plain Dense on the 3-D sequence, which applies the same weights
    at every step exactly like TimeDistributed(Dense). Keras 3's TimeDistributed unrolls
    a Python loop over the (static) time axis: 60 MatMuls in training and 60 in the
    ONNX graph, where Dense is one.
    """
    if window < 2 or n_sensors < 1:
        raise ValueError("window must be >= 2 and n_sensors >= 1")
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(window, n_sensors), name="scaled_window"),
            layers.LSTM(64, return_sequences=True, name="encoder_1"),
            layers.LSTM(32, name="encoder_2"),
            layers.RepeatVector(window, name="repeat"),
            layers.LSTM(32, return_sequences=True, name="decoder_1"),
            layers.LSTM(64, return_sequences=True, name="decoder_2"),
            layers.Dense(n_sensors, name="reconstruction"),
        ],
        name="lstm_autoencoder",
    )


def build_scoring_model(
    autoencoder: keras.Model, center: NDArray[np.float32], scale: NDArray[np.float32]
) -> keras.Model:
    """Raw window → {window_error: (batch,), sensor_error: (batch, sensors)}, sharing weights."""
    _, window, n_sensors = autoencoder.input_shape
    center = np.asarray(center, dtype=np.float32).reshape(-1)
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    if center.shape != (n_sensors,) or scale.shape != (n_sensors,):
        raise ValueError(f"center/scale must have {n_sensors} values")
    if not (scale > 0).all():
        raise ValueError("scale must be positive")
    raw = keras.Input(shape=(window, n_sensors), name=INPUT_NAME, dtype="float32")
    scaled = Standardize(center.tolist(), scale.tolist(), name="standardize")(raw)
    squared = SquaredError(name="squared_error")([scaled, autoencoder(scaled)])
    sensor_error = MeanOver([1], name=PER_SENSOR_OUTPUT)(squared)
    window_error = MeanOver([1, 2], name=SCORE_OUTPUT)(squared)
    return keras.Model(
        raw, {SCORE_OUTPUT: window_error, PER_SENSOR_OUTPUT: sensor_error}, name="lstm_ae_scoring"
    )


class _ProgressLine(keras.callbacks.Callback):  # type: ignore[misc]
    """One compact line per epoch, and the learning rate each epoch actually ran with."""

    def __init__(self, epochs: int, progress: Callable[[str], None]) -> None:
        super().__init__()
        self.epochs = epochs
        self.progress = progress
        self.lrs: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.lrs.append(lr)
        self.progress(
            f"lstm_ae epoch {epoch + 1}/{self.epochs} loss {logs.get('loss', float('nan')):.5f} "
            f"val_loss {logs.get('val_loss', float('nan')):.5f} lr {lr:.1e} "
            f"{time.perf_counter() - self._start:.1f}s"
        )


def _subsample(
    windows: NDArray[np.float32], limit: int | None, rng: np.random.Generator
) -> NDArray[np.float32]:
    """A sorted random subset of at most ``limit`` windows, always as a fresh writable copy."""
    if limit is None or len(windows) <= limit:
        return np.array(windows, dtype=np.float32, copy=True)
    idx = np.sort(rng.choice(len(windows), size=limit, replace=False))
    return np.asarray(windows[idx], dtype=np.float32)


def _scaled(
    windows: NDArray[np.float32], center: NDArray[np.float32], scale: NDArray[np.float32]
) -> NDArray[np.float32]:
    out = (windows - center) / scale
    return np.ascontiguousarray(out, dtype=np.float32)


def fit_lstm_ae(
    train_windows: NDArray[np.float32],
    val_windows: NDArray[np.float32],
    center: NDArray[np.float32],
    scale: NDArray[np.float32],
    *,
    epochs: int = 20,
    batch_size: int = 64,
    patience: int = 4,
    seed: int = 0,
    max_train_windows: int | None = 5000,
    progress: Callable[[str], None] = print,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train the autoencoder on scaled windows; return the raw-window scoring model and history.

    Windows are raw (unscaled) ``(count, window, sensors)`` arrays, e.g. strided views from
    ``edge_agent.pipeline.windows.sliding_windows``. Training windows are subsampled (seeded) to at
    most ``max_train_windows`` and validation windows to a quarter of that, which bounds
    the training time: neighbouring windows overlap by all but one step, so a subset loses
    little. The defaults (20 epochs of at most 5000 windows, batch 64) train the shipped
    8-sensor model in about 3.5 minutes on two cores. History holds ``loss``, ``val_loss``
    and the ``lr`` each epoch ran with; the weights of the best validation epoch are kept.
    """
    train_windows = np.asarray(train_windows)
    val_windows = np.asarray(val_windows)
    if train_windows.ndim != 3 or val_windows.ndim != 3:
        raise ValueError("train_windows and val_windows must be (count, window, sensors)")
    if train_windows.shape[1:] != val_windows.shape[1:]:
        raise ValueError(
            f"train and val windows differ in shape: {train_windows.shape[1:]} "
            f"vs {val_windows.shape[1:]}"
        )
    if len(train_windows) == 0 or len(val_windows) == 0:
        raise ValueError("need at least one training and one validation window")
    _, window, n_sensors = train_windows.shape
    center = np.asarray(center, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    val_limit = None if max_train_windows is None else max(1, max_train_windows // 4)
    x_train = _scaled(_subsample(train_windows, max_train_windows, rng), center, scale)
    x_val = _scaled(_subsample(val_windows, val_limit, rng), center, scale)
    if not (np.isfinite(x_train).all() and np.isfinite(x_val).all()):
        raise ValueError("windows contain NaN or infinite values")

    autoencoder = build_autoencoder(window, n_sensors)
    optimizer = keras.optimizers.Adam(learning_rate=LEARNING_RATE, clipnorm=1.0)
    autoencoder.compile(optimizer=optimizer, loss="mse")
    line = _ProgressLine(epochs, progress)
    callbacks = [
        line,  # first: it records the lr the epoch ran with, before the plateau rule changes it
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(1, patience // 2), min_lr=1e-5
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True
        ),
    ]
    progress(
        f"lstm_ae: {len(x_train)} training windows (of {len(train_windows)}), "
        f"{len(x_val)} validation, window {window}x{n_sensors}, batch {batch_size}, "
        f"up to {epochs} epochs"
    )
    started = time.perf_counter()
    fit = autoencoder.fit(
        x_train,
        x_train,
        validation_data=(x_val, x_val),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    history = {
        "loss": [float(v) for v in fit.history["loss"]],
        "val_loss": [float(v) for v in fit.history["val_loss"]],
        "lr": line.lrs,
    }
    best = int(np.argmin(history["val_loss"]))
    progress(
        f"lstm_ae: {len(history['loss'])} epochs in {time.perf_counter() - started:.0f}s, "
        f"best val_loss {history['val_loss'][best]:.5f} at epoch {best + 1}"
    )
    return build_scoring_model(autoencoder, center, scale), history


def keras_errors(
    scoring_model: keras.Model, windows: NDArray[np.float32], batch_size: int = 1024
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(window_error (n,), sensor_error (n, sensors)) of raw windows, computed by Keras."""
    x = np.ascontiguousarray(windows, dtype=np.float32)
    if len(x) == 0:
        n_sensors = int(scoring_model.input_shape[-1])
        return np.empty(0, np.float32), np.empty((0, n_sensors), np.float32)
    out = scoring_model.predict(x, batch_size=batch_size, verbose=0)
    return (
        np.asarray(out[SCORE_OUTPUT], dtype=np.float32).reshape(-1),
        np.asarray(out[PER_SENSOR_OUTPUT], dtype=np.float32),
    )


def export_lstm_ae(
    scoring_model: keras.Model, window: int, n_sensors: int, path: Path
) -> dict[str, Any]:
    """Write the scoring model as one ONNX graph and return its manifest fields.

    Refuses (RuntimeError) a graph whose names differ from the contract or whose LSTMs
    were not turned into ONNX LSTM ops: an unrolled loop would be much slower on the edge.
    """
    import onnx  # local: only export needs them
    import tf2onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signature = (tf.TensorSpec((None, window, n_sensors), tf.float32, name=INPUT_NAME),)
    started = time.perf_counter()
    proto, _ = tf2onnx.convert.from_keras(
        scoring_model, input_signature=signature, opset=ONNX_OPSET
    )
    seconds = time.perf_counter() - started

    inputs = [i.name for i in proto.graph.input]
    outputs = {o.name for o in proto.graph.output}
    if inputs != [INPUT_NAME] or outputs != {SCORE_OUTPUT, PER_SENSOR_OUTPUT}:
        raise RuntimeError(f"unexpected ONNX io names: inputs {inputs}, outputs {sorted(outputs)}")
    op_counts = Counter(node.op_type for node in proto.graph.node)
    if op_counts["LSTM"] != 4 or op_counts["Loop"] or op_counts["Scan"]:
        raise RuntimeError(f"LSTMs were not converted to ONNX LSTM ops: {dict(op_counts)}")
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))
    return {
        "input_name": INPUT_NAME,
        "score_output": SCORE_OUTPUT,
        "per_sensor_output": PER_SENSOR_OUTPUT,
        "score_sign": 1,
        "input_shape": [None, window, n_sensors],
        "convert_seconds": seconds,
    }
