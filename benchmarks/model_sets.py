"""The model sets the benchmarks run: given, shipped, or built locally once and cached.

Nothing here downloads anything: a model set is ``--models``, the shipped ``models/``, or
built with the project's own training code and cached in :func:`cache_dir`; simulated
readings and windows to feed it come from the project's simulator.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the project, for scripts run from anywhere
    sys.path.insert(0, str(REPO))


def cache_dir() -> Path:
    """Where built model sets and native (Keras/sklearn) models are kept between runs."""
    base = os.environ.get("EDGE_BENCH_CACHE") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "edge-agent-bench"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def simulated_series(n_steps: int, seed: int = 0, day_seconds: float = 3600.0) -> np.ndarray:
    """(n_steps, 8) healthy readings from the project's thermal-unit simulator."""
    from edge_agent.tools.simulator import ThermalUnitSimulator

    sim = ThermalUnitSimulator(seed=seed, day_seconds=day_seconds)
    return np.asarray(sim.generate(n_steps).values, dtype=np.float32)


# ------------------------------------------------------------------------------ model sets


def default_models_dir() -> Path | None:
    """The shipped model set (``make models``) when it exists."""
    shipped = REPO / "models"
    return shipped if (shipped / "manifest.json").is_file() else None


def resolve_models(models: Path | None, *, tiny: bool = False) -> Path:
    """The model set to benchmark: ``--models``, else the shipped one, else a locally built one.

    ``tiny`` (smoke tests) builds a TensorFlow-free set in seconds (see
    :func:`build_tiny_model_set`); otherwise a small but real set is trained with the
    project's pipeline once (about 1–2 minutes) and cached.
    """
    if models is not None:
        if not (Path(models) / "manifest.json").is_file():
            raise SystemExit(f"error: {models}/manifest.json not found")
        return Path(models)
    if tiny:
        out = cache_dir() / "models-tiny"
        if not (out / "manifest.json").is_file():
            build_tiny_model_set(out)
        return out
    shipped = default_models_dir()
    if shipped is not None:
        return shipped
    out = cache_dir() / "models-small"
    if not (out / "manifest.json").is_file():
        build_small_model_set(out)
    return out


def build_small_model_set(out: Path) -> Path:
    """A real model set from the training pipeline on 8 000 simulated steps, trained briefly.

    Same architecture and shapes as the shipped set (200 trees, window 60, LSTM 64-32-32-64);
    only the amount of training differs, which does not change the inference cost.
    """
    from edge_agent.tools.simulator import generate_dataset
    from training.config import load_config
    from training.pipeline import train

    print(f"building a small model set in {out} (once; cached) …", flush=True)
    work = out.parent / (out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "simulated.csv"
    generate_dataset(8000, 4, seed=0, day_seconds=3600.0).to_csv(csv)
    cfg = load_config(
        REPO / "config" / "training.yaml"
        if (REPO / "config" / "training.yaml").is_file()
        else None,
        {
            "data.path": str(csv),
            "output_dir": str(out),
            "lstm_ae.epochs": 2,
            "lstm_ae.max_train_windows": 1500,
            "report": False,
            "tracking.enabled": False,  # a benchmark fixture, not a run to register
        },
    )
    train(cfg, progress=lambda s: None)
    return out


def wide_model_set(width: int) -> Path:
    """A model set of ``width`` sensors (load_plan.sensor_names), trained once and cached."""
    out = cache_dir() / f"models-wide{width}"
    if not (out / "manifest.json").is_file():
        build_wide_model_set(out, width)
    return out


def build_wide_model_set(out: Path, width: int, steps: int = 4000) -> Path:
    """``edge-train train`` (the product's command) on simulated sub-units of ``width`` sensors.

    The data is what the load generator publishes for that width (load_plan.wide_series, other
    seeds); the model sizes are the product's defaults (200 trees, the LSTM-AE architecture,
    window 60), only training is cut short (1 epoch on 1 000 windows, 2 calibration folds),
    which does not change what scoring a window costs.
    """
    import subprocess

    from load_plan import sensor_names, wide_series

    from harness.process import venv_bin

    print(f"training a {width}-sensor model set in {out} with edge-train (once; cached) …")
    work = out.parent / (out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "simulated.csv"
    values = wide_series(steps, width, seed=500)
    with csv.open("w", encoding="utf-8") as f:
        f.write(",".join(["timestamp", *sensor_names(width)]) + "\n")
        for i, row in enumerate(values):
            f.write(f"{1_700_000_000 + i}," + ",".join(f"{v:.4f}" for v in row) + "\n")
    cmd = [
        venv_bin("edge-train"), "train", "--data", str(csv), "--out", str(out), "--force",
        "--label-column", "none", "--epochs", "1", "--max-train-windows", "1000",
        "--folds", "2", "--threads", "2", "--no-report", "--no-tracking",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=work, stdout=subprocess.DEVNULL)
    return out


def build_tiny_model_set(out: Path, *, window: int = 60, trees: int = 20, width: int = 8) -> Path:
    """A valid model set without TensorFlow, in a few seconds, for the smoke tests.

    Isolation Forest: the project's own fit + export (fewer trees). LSTM autoencoder: one
    ONNX ``LSTM`` layer written with ``onnx.helper`` (raw window in; window_error and
    sensor_error out, like the real graph), with random weights. Structurally what the agent
    loads; not a model to detect anything with.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_agent.pipeline.features import compute_series_features, default_feature_spec
    from edge_agent.pipeline.manifest import FORMAT_VERSION, Manifest, sha256_file
    from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, SensorSpec, sensor_names
    from training.iforest import export_iforest, fit_iforest
    from training.model_set import write_manifest

    out.mkdir(parents=True, exist_ok=True)
    names = sensor_names(THERMAL_UNIT_SENSORS)
    specs = list(THERMAL_UNIT_SENSORS)
    series = simulated_series(3000, seed=1)
    if width != len(names):  # sub-units of the thermal sensors (the cost curve's widths)
        import load_plan

        names = list(load_plan.sensor_names(width))
        specs = [specs[j] if j < len(specs) else SensorSpec(nm, "") for j, nm in enumerate(names)]
        series = load_plan.wide_series(3000, width, seed=1).astype(np.float32)
    n = len(names)
    spec = default_feature_spec(names, 10)
    feats = compute_series_features(series, spec)
    pipe = fit_iforest(feats, n_estimators=trees, max_samples=128, seed=0)
    if_info = export_iforest(pipe, spec.n_features, out / "iforest.onnx")

    center = series.mean(axis=0).astype(np.float32)
    scale = np.maximum(series.std(axis=0), 1e-3).astype(np.float32)
    rng = np.random.default_rng(0)
    hidden = n
    w = (rng.normal(0, 0.2, (1, 4 * hidden, n))).astype(np.float32)
    r = (rng.normal(0, 0.2, (1, 4 * hidden, hidden))).astype(np.float32)
    b = np.zeros((1, 8 * hidden), np.float32)
    inits = [
        numpy_helper.from_array(a, nm)
        for a, nm in (
            (center, "center"),
            (scale, "scale"),
            (w, "W"),
            (r, "R"),
            (b, "B"),
            (np.array([1], np.int64), "ax1"),
            (np.array([1, 2], np.int64), "ax12"),
        )
    ]
    nodes = [
        helper.make_node("Sub", ["window", "center"], ["c"]),
        helper.make_node("Div", ["c", "scale"], ["z"]),
        helper.make_node("Transpose", ["z"], ["zt"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["zt", "W", "R", "B"], ["y"], hidden_size=hidden),
        helper.make_node("Squeeze", ["y", "ax1"], ["ys"]),
        helper.make_node("Transpose", ["ys"], ["rec"], perm=[1, 0, 2]),
        helper.make_node("Sub", ["z", "rec"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "ax1"], ["sensor_error"], keepdims=0),
        helper.make_node("ReduceMean", ["sq", "ax12"], ["window_error"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_lstm_ae",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, [None, window, n])],
        [
            helper.make_tensor_value_info("window_error", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("sensor_error", TensorProto.FLOAT, [None, n]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out / "lstm_ae.onnx"))

    manifest = {
        "format_version": FORMAT_VERSION,
        "model_set_version": "bench-tiny",
        "created_at": "2026-01-01T00:00:00Z",
        "training_data_sha256": "0" * 64,
        "sensors": [s.to_dict() for s in specs],
        "window": window,
        "step_seconds": 1.0,
        "features": spec.to_dict(),
        "models": {
            "iforest": {
                "kind": "iforest",
                "file": "iforest.onnx",
                "sha256": sha256_file(out / "iforest.onnx"),
                "input_name": if_info["input_name"],
                "input_kind": "features",
                "input_shape": if_info["input_shape"],
                "score_output": if_info["score_output"],
                "score_sign": if_info["score_sign"],
                "threshold": 0.1,
                "score_scale": 0.05,
                "params": {"n_estimators": trees, "max_samples": 128, "seed": 0},
            },
            "lstm_ae": {
                "kind": "lstm_ae",
                "file": "lstm_ae.onnx",
                "sha256": sha256_file(out / "lstm_ae.onnx"),
                "input_name": "window",
                "input_kind": "window",
                "input_shape": [None, window, n],
                "score_output": "window_error",
                "score_sign": 1,
                "per_sensor_output": "sensor_error",
                "threshold": 5.0,
                "score_scale": 1.0,
                "params": {},
            },
        },
        "voting": {
            "strategy": "weighted",
            "weights": {"iforest": 0.4, "lstm_ae": 0.6},
            "threshold": 0.5,
        },
        "metrics": {},
    }
    write_manifest(Manifest.model_validate(manifest), out)  # the one model-set writer
    return out


def manifest_digest(models: Path) -> str:
    return hashlib.sha256((models / "manifest.json").read_bytes()).hexdigest()[:16]


def load_manifest_dict(models: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((models / "manifest.json").read_text(encoding="utf-8"))
    return data


def series_for(sensors: list[str], n_steps: int) -> np.ndarray:
    """Simulated readings for these sensors (thermal-unit names), else scaled noise."""
    from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names

    names = sensor_names(THERMAL_UNIT_SENSORS)
    if all(s in names for s in sensors):
        full = simulated_series(n_steps, seed=3)
        return np.ascontiguousarray(full[:, [names.index(s) for s in sensors]])
    rng = np.random.default_rng(3)
    return (50 + 5 * rng.standard_normal((n_steps, len(sensors)))).astype(np.float32)


def sample_windows(models: Path, count: int, seed: int = 7) -> np.ndarray:
    """(count, window, sensors) float32 windows of simulated readings for this model set."""
    man = load_manifest_dict(models)
    window = int(man["window"])
    sensors = [s["name"] for s in man["sensors"]]
    series = series_for(sensors, window + count + 10)
    from edge_agent.pipeline.windows import sliding_windows

    return np.ascontiguousarray(sliding_windows(series, window)[:count])
