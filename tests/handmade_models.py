"""Small, deterministic, *real* ONNX model sets for tests that need predictable models.

Both models are z-score detectors written directly with ``onnx.helper`` in the exact I/O
contract of the trained ones, so everything from the manifest check to onnxruntime runs for
real, while a test can still reason about the result:

* ``iforest`` — input ``X`` [batch, n_features] → ``scores`` [batch, 1]; the raw output is
  ``-max_f |(x_f - center_f) / scale_f|`` (``score_sign`` -1, like sklearn's
  ``score_samples``), center/scale per feature measured on :func:`normal_series`.
* ``lstm_ae`` — input ``window`` [batch, window, n_sensors] → ``window_error`` [batch] and
  ``sensor_error`` [batch, n_sensors]; ``sensor_error`` is the mean over time of
  ``((x - center) / sd)^2`` per sensor and ``window_error`` its mean over sensors.

On :func:`normal_series` data the ``lstm_ae`` error is about 1 and the ``iforest`` score
about 3; a step change of many standard deviations on one sensor makes both anomalous at
once, with that sensor on top of ``sensor_error``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from edge_agent.pipeline.features import FeatureSpec, compute_series_features, default_feature_spec
from edge_agent.pipeline.manifest import (
    FORMAT_VERSION,
    FeatureEntry,
    Manifest,
    ModelEntry,
    SensorEntry,
    VotingEntry,
    sha256_file,
)
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, SensorSpec
from training.model_set import write_manifest

#: (center, standard deviation) of each thermal sensor in steady operation.
THERMAL_NORMAL: dict[str, tuple[float, float]] = {
    "steam_temperature": (540.0, 1.0),
    "steam_pressure": (160.0, 0.6),
    "feedwater_flow": (480.0, 3.0),
    "turbine_vibration": (2.5, 0.1),
    "load": (600.0, 3.0),
    "flue_gas_temperature": (140.0, 1.0),
    "condenser_vacuum": (8.0, 0.1),
    "bearing_temperature": (70.0, 0.5),
}

IFOREST_THRESHOLD = 6.0
LSTM_THRESHOLD = 1.6
_OPSET = 17
_IR_VERSION = 8


def normal_operating_point(
    sensors: Sequence[SensorSpec], normal: Mapping[str, tuple[float, float]] | None = None
) -> dict[str, tuple[float, float]]:
    """Center and sd per sensor: given, else the thermal defaults, else mid-range and 1%."""
    given = dict(normal or {})
    out = {}
    for s in sensors:
        if s.name in given:
            out[s.name] = given[s.name]
        elif s.name in THERMAL_NORMAL:
            out[s.name] = THERMAL_NORMAL[s.name]
        else:
            out[s.name] = ((s.lo + s.hi) / 2.0, (s.hi - s.lo) / 100.0)
    return out


def normal_series(
    n_steps: int,
    sensors: Sequence[SensorSpec] = THERMAL_UNIT_SENSORS,
    seed: int = 0,
    normal: Mapping[str, tuple[float, float]] | None = None,
) -> NDArray[np.float64]:
    """Stationary Gaussian readings around the operating point, shape (n_steps, n_sensors)."""
    point = normal_operating_point(sensors, normal)
    center = np.array([point[s.name][0] for s in sensors])
    sd = np.array([point[s.name][1] for s in sensors])
    rng = np.random.default_rng(seed)
    values: NDArray[np.float64] = center + sd * rng.standard_normal((n_steps, len(sensors)))
    return values


def _const(name: str, values: NDArray[np.float64]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="tests.handmade_models",
    )
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString(deterministic=True))


def _iforest_graph(center: NDArray[np.float64], scale: NDArray[np.float64]) -> onnx.GraphProto:
    n = len(center)
    nodes = [
        helper.make_node("Sub", ["X", "center"], ["d"]),
        helper.make_node("Div", ["d", "scale"], ["z"]),
        helper.make_node("Abs", ["z"], ["a"]),
        helper.make_node("ReduceMax", ["a"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Neg", ["m"], ["scores"]),
    ]
    return helper.make_graph(
        nodes,
        "handmade_iforest",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 1])],
        initializer=[_const("center", center), _const("scale", scale)],
    )


def _autoencoder_graph(
    center: NDArray[np.float64], sd: NDArray[np.float64], window: int
) -> onnx.GraphProto:
    n = len(center)
    nodes = [
        helper.make_node("Sub", ["window", "center"], ["d"]),
        helper.make_node("Div", ["d", "sd"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["sensor_error"], axes=[1], keepdims=0),
        helper.make_node("ReduceMean", ["sensor_error"], ["window_error"], axes=[1], keepdims=0),
    ]
    return helper.make_graph(
        nodes,
        "handmade_lstm_ae",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, [None, window, n])],
        [
            helper.make_tensor_value_info("window_error", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("sensor_error", TensorProto.FLOAT, [None, n]),
        ],
        initializer=[_const("center", center), _const("sd", sd)],
    )


def _feature_stats(
    spec: FeatureSpec, sensors: Sequence[SensorSpec], normal: Mapping[str, tuple[float, float]]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    features = compute_series_features(normal_series(4000, sensors, 12345, normal), spec)
    f = features.astype(np.float64)
    return f.mean(axis=0), np.maximum(f.std(axis=0), 1e-6)


def build_model_set(
    directory: Path | str,
    sensors: Sequence[SensorSpec] = THERMAL_UNIT_SENSORS,
    window: int = 60,
    *,
    step_seconds: float = 1.0,
    rolling: int = 10,
    normal: Mapping[str, tuple[float, float]] | None = None,
    iforest_threshold: float = IFOREST_THRESHOLD,
    lstm_threshold: float = LSTM_THRESHOLD,
    weights: Mapping[str, float] | None = None,
    voting_threshold: float = 0.5,
    version: str | None = None,
    envelopes: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Write a verified model set (two ONNX files + manifest.json) into ``directory``.

    ``envelopes``: training envelope (lo, hi) per sensor; a sensor's instrument range is
    its spec's (``±inf``, i.e. unknown, is written as null).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    sensors = list(sensors)
    names = [s.name for s in sensors]
    point = normal_operating_point(sensors, normal)
    center = np.array([point[n][0] for n in names])
    sd = np.array([point[n][1] for n in names])
    spec = default_feature_spec(names, rolling=rolling)
    f_center, f_scale = _feature_stats(spec, sensors, point)

    _save(_iforest_graph(f_center, f_scale), out / "iforest.onnx")
    _save(_autoencoder_graph(center, sd, window), out / "lstm_ae.onnx")

    models = {
        "iforest": ModelEntry(
            kind="iforest",
            file="iforest.onnx",
            sha256=sha256_file(out / "iforest.onnx"),
            input_name="X",
            input_kind="features",
            input_shape=[None, spec.n_features],
            score_output="scores",
            score_sign=-1,
            threshold=iforest_threshold,
            score_scale=1.0,
            params={"handmade": "max |z| over features"},
        ),
        "lstm_ae": ModelEntry(
            kind="lstm_ae",
            file="lstm_ae.onnx",
            sha256=sha256_file(out / "lstm_ae.onnx"),
            input_name="window",
            input_kind="window",
            input_shape=[None, window, len(names)],
            score_output="window_error",
            score_sign=1,
            per_sensor_output="sensor_error",
            threshold=lstm_threshold,
            score_scale=0.25,
            params={"handmade": "mean z^2 over the window"},
        ),
    }
    digest = hashlib.sha256(
        b"".join((out / m.file).read_bytes() for m in models.values())
        + repr((iforest_threshold, lstm_threshold, dict(weights or {}), step_seconds)).encode()
    ).hexdigest()
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_set_version=version or f"handmade-{digest[:12]}",
        created_at="2024-01-01T00:00:00Z",
        training_data_sha256=hashlib.sha256(b"handmade normal_series").hexdigest(),
        sensors=[
            SensorEntry.model_validate(
                {
                    **s.to_dict(),
                    "envelope_lo": (envelopes or {}).get(s.name, (None, None))[0],
                    "envelope_hi": (envelopes or {}).get(s.name, (None, None))[1],
                }
            )
            for s in sensors
        ],
        window=window,
        step_seconds=step_seconds,
        features=FeatureEntry(**spec.to_dict()),
        models=models,
        voting=VotingEntry(
            strategy="weighted",
            weights=dict(weights or {"iforest": 0.5, "lstm_ae": 0.5}),
            threshold=voting_threshold,
        ),
        versions={"handmade": "1"},
    )
    write_manifest(manifest, out)  # the one model-set writer, as training uses
    return out
