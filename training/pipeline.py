"""``train(cfg)``: CSV in, verified model set (two ONNX files + manifest.json + report) out.

The order matters and is the point of this module:

1. load and validate the CSV, split it chronologically (train / validation / test);
2. fit the Isolation Forest on training features and the LSTM autoencoder on training
   windows — normal data only when labels exist, so the models learn what *normal* is;
3. export both to ONNX and score validation and test **through onnxruntime**
   (:class:`edge_agent.scoring.ModelSet`, the agent's own code), so thresholds and the
   reported metrics belong to exactly what the agent will run;
4. write the manifest, load it back with :func:`edge_agent.manifest.load_manifest`, and
   only then move the files into the output directory (a failed run never leaves a
   half-written model set where the agent looks).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import edge_agent
from edge_agent.ensemble import Votes, vote
from edge_agent.features import FeatureSpec, compute_series_features, default_feature_spec
from edge_agent.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    ModelEntry,
    VotingEntry,
    load_manifest,
    sha256_file,
)
from edge_agent.scoring import ModelSet
from edge_agent.sensors import THERMAL_UNIT_SENSORS, SensorSpec
from edge_agent.windows import sliding_windows

from .data import DataError, Dataset, DataSpec, Split, chronological_split, load_csv
from .metrics import detection_metrics
from .thresholds import quantile_threshold, score_scale
from .tracking import TrackingSection, record_run

Progress = Callable[[str], None]
MODEL_KEYS = ("iforest", "lstm_ae")
MODEL_FILES = {"iforest": "iforest.onnx", "lstm_ae": "lstm_ae.onnx"}
#: Share of the observed span added below and above a foreign sensor's data range.
RANGE_MARGIN = 0.5
SCALER_NOTE = (
    "Both scalers are also inside the ONNX graphs (the agent feeds raw readings); these "
    "copies are for inspection only. Do not scale inputs a second time."
)


class TrainConfigError(ValueError):
    """An invalid training configuration; one line per bad key."""


# --- configuration ---------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Section):
    path: Path | None = None
    timestamp_column: str = "timestamp"
    separator: str = Field(default=",", min_length=1, max_length=1)
    sensors: list[str] | None = None
    label_column: str | None = "label"
    exclude: list[str] = Field(default_factory=list)
    step_seconds: float | None = Field(default=None, gt=0)
    max_gap_seconds: float = Field(default=5.0, ge=0)

    def spec(self) -> DataSpec:
        return DataSpec(
            timestamp_column=self.timestamp_column,
            separator=self.separator,
            sensors=None if self.sensors is None else tuple(self.sensors),
            label_column=self.label_column,
            exclude=tuple(self.exclude),
            step_seconds=self.step_seconds,
            max_gap_seconds=self.max_gap_seconds,
        )


class SplitSection(_Section):
    train: float = Field(default=0.6, gt=0, lt=1)
    validation: float = Field(default=0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_test(self) -> SplitSection:
        if self.train + self.validation >= 1:
            raise ValueError("train + validation must be below 1 (the rest is the test part)")
        return self


class IForestSection(_Section):
    n_estimators: int = Field(default=200, ge=1)
    max_samples: int = Field(default=256, ge=2)
    contamination: float | Literal["auto"] = "auto"
    threshold_quantile: float = Field(default=0.995, gt=0, lt=1)


class LstmSection(_Section):
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=64, ge=1)
    patience: int = Field(default=4, ge=1)
    max_train_windows: int | None = Field(default=5000, ge=1)
    threshold_quantile: float = Field(default=0.995, gt=0, lt=1)


class SimulatorSection(_Section):
    steps: int = Field(default=100000, ge=1000)
    events: int = Field(default=60, ge=0)
    #: Out of sample for the demo and the tests, which simulate seeds 0..N.
    seed: int = 7
    day_seconds: float = Field(default=3600.0, gt=0)
    #: Units of the same design simulated one after another (steps and events are totals).
    units: int = Field(default=4, ge=1)


def _default_voting() -> VotingEntry:
    return VotingEntry(strategy="weighted", weights={"iforest": 0.4, "lstm_ae": 0.6}, threshold=0.5)


class TrainConfig(_Section):
    """Everything ``train`` needs; ``config/training.yaml`` documents every key."""

    seed: int = 0
    threads: int = Field(default=2, ge=1)
    output_dir: Path = Path("models")
    window: int = Field(default=60, ge=2)
    rolling: int = Field(default=10, ge=2)
    report: bool = True
    data: DataSection = Field(default_factory=DataSection)
    split: SplitSection = Field(default_factory=SplitSection)
    iforest: IForestSection = Field(default_factory=IForestSection)
    lstm_ae: LstmSection = Field(default_factory=LstmSection)
    voting: VotingEntry = Field(default_factory=_default_voting)
    simulator: SimulatorSection = Field(default_factory=SimulatorSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.rolling > self.window:
            raise ValueError(f"rolling ({self.rolling}) cannot exceed window ({self.window})")
        unknown = set(self.voting.weights) - set(MODEL_KEYS)
        if unknown:
            raise ValueError(f"voting.weights names unknown models {sorted(unknown)}")
        return self


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg']}")
    return lines


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value


def load_config(path: Path | str | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (None: all defaults) and apply ``{"dotted.key": value}`` overrides.

    Overrides are applied before validation, so a bad command-line value is reported with
    its key just like a bad line in the file.
    """
    tree: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TrainConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TrainConfigError(f"{path}: cannot read: {exc}") from None
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise TrainConfigError(f"{path}: the top level must be a mapping of keys")
        tree = loaded
    for dotted, value in (overrides or {}).items():
        _set_path(tree, dotted, value)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        raise TrainConfigError(
            f"{where}: invalid configuration:\n  " + "\n  ".join(_error_lines(exc))
        ) from None


# --- progress and timing ---------------------------------------------------------------------


class Clock:
    """Prints what is happening and how long each phase took; keeps the timings."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    def say(self, message: str) -> None:
        self.progress(f"[{time.perf_counter() - self.started:7.1f}s] {message}")

    @contextmanager
    def phase(self, name: str, message: str) -> Iterator[None]:
        self.say(message + " …")
        t0 = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t0
        self.say(f"{message}: done in {self.timings[name]:.1f}s")


# --- scoring through onnxruntime -------------------------------------------------------------


@dataclass
class ScoredSteps:
    """Scores of consecutive steps of a dataset, each from the window ending at that step."""

    steps: NDArray[np.int64]
    timestamps: NDArray[np.float64]
    values: NDArray[np.float64]
    labels: NDArray[np.int8] | None
    scores: dict[str, NDArray[np.float64]]
    per_sensor: NDArray[np.float32] | None
    seconds: float

    def __len__(self) -> int:
        return len(self.steps)

    def votes(self, models: dict[str, ModelEntry], voting: VotingEntry) -> Votes:
        return vote(self.scores, models, voting)


def score_steps(
    model_set: ModelSet, data: Dataset, steps: slice, batch_size: int = 2048
) -> ScoredSteps:
    """Score every step in ``steps`` that has a full window of history (in the whole dataset).

    Earlier steps of the dataset serve as context: the first test step is scored from a
    window reaching back into the validation part, exactly as the live agent would.
    """
    window = model_set.window
    first = max(steps.start, window - 1)
    stop = max(first, steps.stop)
    windows = sliding_windows(data.values[first - window + 1 : stop], window)
    scores: dict[str, list[NDArray[np.float64]]] = {k: [] for k in model_set.manifest.models}
    per_sensor: list[NDArray[np.float32]] = []
    t0 = time.perf_counter()
    for i in range(0, len(windows), batch_size):
        batch = model_set.score(windows[i : i + batch_size])
        for key, s in batch.scores.items():
            scores[key].append(s)
        if batch.per_sensor is not None:
            per_sensor.append(batch.per_sensor)
    idx = np.arange(first, stop, dtype=np.int64)
    return ScoredSteps(
        steps=idx,
        timestamps=data.timestamps[idx],
        values=data.values[idx],
        labels=None if data.labels is None else data.labels[idx],
        scores={k: np.concatenate(v) if v else np.empty(0, np.float64) for k, v in scores.items()},
        per_sensor=np.concatenate(per_sensor) if per_sensor else None,
        seconds=time.perf_counter() - t0,
    )


def evaluate_scored(
    scored: ScoredSteps,
    models: dict[str, ModelEntry],
    voting: VotingEntry,
    step_seconds: float,
    settle_steps: int = 0,
) -> dict[str, dict[str, Any]]:
    """Detection metrics per model and for the ensemble (labels required).

    ``settle_steps`` is normally window - 1: see :func:`training.metrics.settled_far_percent`.
    """
    if scored.labels is None:
        raise DataError("metrics need labels; this data has no label column")
    votes = scored.votes(models, voting)
    flags = {**votes.decisions, "ensemble": votes.ensemble_decision}
    return {
        key: detection_metrics(scored.labels, decision, step_seconds, settle_steps)
        for key, decision in flags.items()
    }


# --- helpers ---------------------------------------------------------------------------------


def normal_windows(labels: NDArray[np.integer[Any]], length: int) -> NDArray[np.bool_]:
    """For each window of ``length`` steps (window i starts at step i): no anomalous step?"""
    c = np.concatenate(([0], np.cumsum(np.asarray(labels, dtype=np.int64) != 0)))
    if len(labels) < length:
        return np.zeros(0, dtype=bool)
    return np.asarray((c[length:] - c[:-length]) == 0)


def _pick(
    windows: NDArray[np.float32], mask: NDArray[np.bool_] | None, limit: int | None, seed: int
) -> NDArray[np.float32]:
    """Normal windows (all when mask is None), a seeded sorted subset of at most ``limit``.

    Subsampling before indexing keeps the copy small: a boolean index of a strided view
    would copy every window first.
    """
    idx = np.arange(len(windows)) if mask is None else np.flatnonzero(mask)
    if limit is not None and len(idx) > limit:
        rng = np.random.default_rng([seed, 7])
        idx = np.sort(rng.choice(idx, size=limit, replace=False))
    return np.ascontiguousarray(windows[idx], dtype=np.float32)


def sensor_entries(data: Dataset) -> list[SensorSpec]:
    """Known sensors keep their physical range; others get the data range plus a wide margin.

    The margin matters: the agent drops readings outside the range as impossible, so a
    range as tight as the training data would reject the first unusual but real reading.
    """
    known = {s.name: s for s in THERMAL_UNIT_SENSORS}
    specs = []
    for j, name in enumerate(data.sensors):
        if name in known:
            specs.append(known[name])
            continue
        lo, hi = float(data.values[:, j].min()), float(data.values[:, j].max())
        margin = max(RANGE_MARGIN * (hi - lo), 1e-6 * max(1.0, abs(lo), abs(hi)))
        specs.append(SensorSpec(name, "", lo - margin, hi + margin, "range derived from data"))
    return specs


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "edge-agent": edge_agent.__version__}
    for dist in ("numpy", "scikit-learn", "keras", "tf2onnx", "skl2onnx", "onnx", "onnxruntime"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            versions["tensorflow"] = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            versions["tensorflow"] = "not installed"
    return versions


def model_set_version(manifest_dict: dict[str, Any], created_at: datetime) -> str:
    """``YYYYMMDD-<8 hex>``: the hash covers what the agent runs (files, thresholds,
    voting, sensors, features), not timestamps or metrics, so equal sets get equal ids."""
    keep = {
        k: v
        for k, v in manifest_dict.items()
        if k not in ("model_set_version", "created_at", "metrics", "versions", "tracking")
    }
    digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()
    return f"{created_at:%Y%m%d}-{digest[:8]}"


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    path = directory / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", "utf-8")
    os.replace(tmp, path)
    return path


# --- training --------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What ``train`` produced; the native models are kept for parity checks and reports."""

    out_dir: Path
    manifest: Manifest
    data: Dataset
    split: Split
    iforest: Any  # sklearn Pipeline (RobustScaler + IsolationForest)
    lstm_scoring_model: Any  # keras Model: raw window -> window_error, sensor_error
    history: dict[str, list[float]]
    validation: ScoredSteps
    test: ScoredSteps
    metrics: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None


def _check_parts(data: Dataset, split: Split, cfg: TrainConfig) -> None:
    sizes = split.sizes()
    need = {"train": 2 * cfg.window, "validation": cfg.window, "test": cfg.window}
    short = [f"{p} has {sizes[p]} steps (needs >= {n})" for p, n in need.items() if sizes[p] < n]
    if short:
        raise DataError(
            f"{data.source}: {data.n_steps} steps are too few for window {cfg.window}: "
            + "; ".join(short)
        )
    train = data.values[split.train]
    flat = [s for j, s in enumerate(data.sensors) if np.ptp(train[:, j]) == 0]
    if flat:
        raise DataError(
            f"{data.source}: sensors {flat} are constant in the training part "
            f"(first {sizes['train']} steps); a constant sensor cannot be scaled"
        )
    if data.labels is not None and not np.any(data.labels[split.train] == 0):
        raise DataError(f"{data.source}: the training part has no normal (label 0) steps")


def _entry(
    key: str, info: dict[str, Any], input_kind: str, file: Path, params: dict[str, Any]
) -> ModelEntry:
    return ModelEntry(
        kind=key,  # type: ignore[arg-type]  # keys are the model kinds
        file=file.name,
        sha256=sha256_file(file),
        input_name=info["input_name"],
        input_kind=input_kind,  # type: ignore[arg-type]
        input_shape=list(info["input_shape"]),
        score_output=info["score_output"],
        score_sign=info["score_sign"],
        per_sensor_output=info.get("per_sensor_output"),
        threshold=0.0,  # set from validation scores once the ONNX models can be scored
        score_scale=1.0,
        params=params,
    )


@dataclass
class _Fitted:
    """Native models and what the manifest needs to say about how they were fitted."""

    spec: FeatureSpec
    forest: Any
    iforest_rows: int
    scoring_model: Any
    history: dict[str, list[float]]
    lstm_center: NDArray[np.float32]
    lstm_scale: NDArray[np.float32]


def _fit_models(cfg: TrainConfig, data: Dataset, split: Split, clock: Clock) -> _Fitted:
    """Isolation Forest on training feature rows, LSTM on training windows; normal data only
    when labels exist (a row or window counts as normal when none of its steps is labelled)."""
    with clock.phase("imports", "importing scikit-learn and TensorFlow"):
        from . import iforest as iforest_mod  # heavy imports only when training
        from . import lstm_ae as lstm_mod

    train_values = data.values[split.train]
    train_labels = None if data.labels is None else data.labels[split.train]
    spec = default_feature_spec(data.sensors, cfg.rolling)
    with clock.phase("features", f"computing {spec.n_features} features per step"):
        features = compute_series_features(train_values, spec)  # row i = step i + rolling - 1
        if train_labels is not None:
            features = features[normal_windows(train_labels, cfg.rolling)]
    with clock.phase(
        "iforest_fit",
        f"fitting Isolation Forest ({cfg.iforest.n_estimators} trees, "
        f"{cfg.iforest.max_samples} samples) on {len(features)} normal rows",
    ):
        forest = iforest_mod.fit_iforest(
            features,
            n_estimators=cfg.iforest.n_estimators,
            max_samples=cfg.iforest.max_samples,
            contamination=cfg.iforest.contamination,
            seed=cfg.seed,
            n_jobs=cfg.threads,
        )

    lstm_mod.set_tf_threads(cfg.threads)
    window, limit = cfg.window, cfg.lstm_ae.max_train_windows
    normal_steps = train_values if train_labels is None else train_values[train_labels == 0]
    center, scale = lstm_mod.fit_scaler(normal_steps)
    train_windows = _pick(
        sliding_windows(train_values, window),
        None if train_labels is None else normal_windows(train_labels, window),
        limit,
        cfg.seed,
    )
    # validation windows end in the validation part (their first steps reach back into train)
    val_steps = slice(split.validation.start - window + 1, split.validation.stop)
    val_windows = _pick(
        sliding_windows(data.values[val_steps], window),
        None if data.labels is None else normal_windows(data.labels[val_steps], window),
        None if limit is None else max(1, limit // 4),
        cfg.seed + 1,
    )
    if len(train_windows) == 0 or len(val_windows) == 0:
        raise DataError(f"{data.source}: no normal windows of {window} steps to train the LSTM on")
    with clock.phase(
        "lstm_ae_fit",
        f"training LSTM autoencoder on {len(train_windows)} windows "
        f"(validation {len(val_windows)}), up to {cfg.lstm_ae.epochs} epochs",
    ):
        scoring_model, history = lstm_mod.fit_lstm_ae(
            train_windows,
            val_windows,
            center,
            scale,
            epochs=cfg.lstm_ae.epochs,
            batch_size=cfg.lstm_ae.batch_size,
            patience=cfg.lstm_ae.patience,
            seed=cfg.seed,
            max_train_windows=limit,
            progress=clock.say,
        )
    return _Fitted(spec, forest, len(features), scoring_model, history, center, scale)


def _export(
    cfg: TrainConfig, fitted: _Fitted, n_sensors: int, directory: Path
) -> dict[str, ModelEntry]:
    """Both ONNX files into ``directory``; their manifest entries (thresholds still unset)."""
    from . import iforest as iforest_mod
    from . import lstm_ae as lstm_mod

    if_path = directory / MODEL_FILES["iforest"]
    lstm_path = directory / MODEL_FILES["lstm_ae"]
    if_info = iforest_mod.export_iforest(fitted.forest, fitted.spec.n_features, if_path)
    lstm_info = lstm_mod.export_lstm_ae(fitted.scoring_model, cfg.window, n_sensors, lstm_path)
    history = fitted.history
    best = int(np.argmin(history["val_loss"]))
    return {
        "iforest": _entry(
            "iforest",
            if_info,
            "features",
            if_path,
            {
                "n_estimators": cfg.iforest.n_estimators,
                "max_samples": cfg.iforest.max_samples,
                "contamination": cfg.iforest.contamination,
                "seed": cfg.seed,
                "training_rows": fitted.iforest_rows,
                "onnx_nodes": if_info.get("nodes"),
                "threshold_quantile": cfg.iforest.threshold_quantile,
            },
        ),
        "lstm_ae": _entry(
            "lstm_ae",
            lstm_info,
            "window",
            lstm_path,
            {
                "epochs_max": cfg.lstm_ae.epochs,
                "epochs_run": len(history["loss"]),
                "best_epoch": best + 1,
                "best_val_loss": history["val_loss"][best],
                "batch_size": cfg.lstm_ae.batch_size,
                "patience": cfg.lstm_ae.patience,
                "max_train_windows": cfg.lstm_ae.max_train_windows,
                "seed": cfg.seed,
                "threshold_quantile": cfg.lstm_ae.threshold_quantile,
            },
        ),
    }


def _manifest_dict(
    cfg: TrainConfig,
    data: Dataset,
    fitted: _Fitted,
    entries: dict[str, ModelEntry],
    created: datetime,
) -> dict[str, Any]:
    from .iforest import scaler_params

    return {
        "format_version": FORMAT_VERSION,
        "model_set_version": "pending",
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "training_data_sha256": data.sha256,
        "sensors": [s.to_dict() for s in sensor_entries(data)],
        "window": cfg.window,
        "step_seconds": data.step_seconds,
        "features": fitted.spec.to_dict(),
        "scalers": {
            "note": SCALER_NOTE,
            "iforest": {"kind": "robust", **scaler_params(fitted.forest)},
            "lstm_ae": {
                "kind": "standard",
                "center": [float(v) for v in fitted.lstm_center],
                "scale": [float(v) for v in fitted.lstm_scale],
            },
        },
        "models": {k: e.model_dump(mode="json") for k, e in entries.items()},
        "voting": cfg.voting.model_dump(mode="json"),
        "versions": package_versions(),
    }


def context_anomalous(
    labels: NDArray[np.integer[Any]], steps: NDArray[np.int64], length: int
) -> NDArray[np.int8]:
    """1 where any of the ``length`` steps ending at each of ``steps`` is labelled anomalous.

    A windowed model judges step t from steps t-length+1..t, so the steps right after a
    fault still see it. Such steps are labelled normal but are not *clean* normal data;
    left in, the ~window steps after every validation fault would set the threshold.
    """
    c = np.concatenate(([0], np.cumsum(np.asarray(labels) != 0)))
    lo = np.maximum(steps - length + 1, 0)
    return ((c[steps + 1] - c[lo]) > 0).astype(np.int8)


def _set_thresholds(
    cfg: TrainConfig,
    entries: dict[str, ModelEntry],
    val: ScoredSteps,
    labels: NDArray[np.int8] | None,
    clock: Clock,
) -> tuple[dict[str, ModelEntry], dict[str, dict[str, float]]]:
    """Per model: a quantile of validation scores over clean normal steps, and the scale.

    "Clean" uses each model's own view: the last ``rolling`` steps for the Isolation
    Forest's features, the whole window for the LSTM.
    """
    quantiles = {
        "iforest": cfg.iforest.threshold_quantile,
        "lstm_ae": cfg.lstm_ae.threshold_quantile,
    }
    context = {"iforest": cfg.rolling, "lstm_ae": cfg.window}
    updated: dict[str, ModelEntry] = {}
    summary: dict[str, dict[str, float]] = {}
    for key, entry in entries.items():
        q = quantiles[key]
        dirty = None if labels is None else context_anomalous(labels, val.steps, context[key])
        th = quantile_threshold(val.scores[key], q, dirty)
        sc = score_scale(val.scores[key], dirty)
        updated[key] = entry.model_copy(update={"threshold": th, "score_scale": sc})
        summary[key] = {
            "quantile": q,
            "threshold": th,
            "score_scale": sc,
            "normal_validation_steps": int(len(val) if dirty is None else (dirty == 0).sum()),
        }
        clock.say(
            f"{key}: threshold {th:.6g} = q{q} of {summary[key]['normal_validation_steps']} "
            f"clean normal validation scores; scale {sc:.4g}"
        )
    return updated, summary


def _test_metrics(
    cfg: TrainConfig,
    data: Dataset,
    entries: dict[str, ModelEntry],
    val: ScoredSteps,
    test: ScoredSteps,
    clock: Clock,
) -> dict[str, Any]:
    if data.labels is None:
        votes = test.votes(entries, cfg.voting)
        flagged = {k: 100 * float(d.mean()) for k, d in votes.decisions.items()}
        flagged["ensemble"] = 100 * float(votes.ensemble_decision.mean())
        return {"test": {"flagged_percent": flagged}}
    out = {
        "validation": evaluate_scored(val, entries, cfg.voting, data.step_seconds, cfg.window - 1),
        "test": evaluate_scored(test, entries, cfg.voting, data.step_seconds, cfg.window - 1),
    }
    for key, m in out["test"].items():
        clock.say(
            f"test {key:8s} F1 {_fmt(m['f1'])}  FAR {_fmt(m['far_percent'])}% "
            f"(settled {_fmt(m['far_settled_percent'])}%)  "
            f"MAR {_fmt(m['mar_percent'])}%  events {m['events_detected']}/{m['events']}  "
            f"delay {_fmt(m['mean_detection_delay_seconds'], 1)}s  "
            f"false alarms/day {_fmt(m['false_alarms_per_day'], 1)}"
        )
    return out


def train(cfg: TrainConfig, progress: Progress = print) -> TrainResult:
    """Fit, export, threshold, evaluate and write one model set (see module docstring)."""
    clock = Clock(progress)
    if cfg.data.path is None:
        raise DataError("no training data: give --data CSV or set data.path in the config")
    out = Path(cfg.output_dir)

    with clock.phase("load", f"loading {cfg.data.path}"):
        data = load_csv(cfg.data.path, cfg.data.spec())
    clock.say(
        f"{data.rows_read} rows -> {data.n_steps} steps of {data.step_seconds:g}s, "
        f"{len(data.sensors)} sensors {list(data.sensors)}, "
        + (f"{100 * data.labels.mean():.2f}% anomalous" if data.labels is not None else "no labels")
        + (f", {data.interpolated_cells} cells interpolated" if data.interpolated_cells else "")
        + (f", ignored columns {list(data.ignored_columns)}" if data.ignored_columns else "")
    )
    split = chronological_split(data.n_steps, cfg.split.train, cfg.split.validation)
    _check_parts(data, split, cfg)
    clock.say(f"split (chronological): {split.sizes()}")
    fitted = _fit_models(cfg, data, split, clock)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with clock.phase("export", "exporting both models to ONNX"):
            entries = _export(cfg, fitted, len(data.sensors), staging)
        created = datetime.now(UTC).replace(microsecond=0)
        base = _manifest_dict(cfg, data, fitted, entries, created)
        # A provisional manifest (thresholds unset) lets ModelSet load the graphs; it lives
        # in the staging directory only and is replaced below.
        write_manifest(Manifest.model_validate(base), staging)
        model_set = ModelSet.load(staging, threads=cfg.threads)
        with clock.phase("validation_scoring", "scoring the validation part with onnxruntime"):
            val_scored = score_steps(model_set, data, split.validation)
        entries, thresholds = _set_thresholds(cfg, entries, val_scored, data.labels, clock)
        with clock.phase("evaluation", "scoring the test part with onnxruntime"):
            test_scored = score_steps(model_set, data, split.test)
        metrics: dict[str, Any] = {
            "data": {
                "source": data.source.name,
                "rows": data.rows_read,
                "steps": data.n_steps,
                "step_seconds": data.step_seconds,
                "interpolated_cells": data.interpolated_cells,
                "split_steps": split.sizes(),
                "labelled": data.labels is not None,
                "iforest_training_rows": fitted.iforest_rows,
            },
            "thresholds": thresholds,
            "train_seconds": {
                "iforest": clock.timings["iforest_fit"],
                "lstm_ae": clock.timings["lstm_ae_fit"],
            },
            "lstm_ae_history": fitted.history,
            **_test_metrics(cfg, data, entries, val_scored, test_scored, clock),
            "timings_seconds": dict(clock.timings),
        }
        base["models"] = {k: e.model_dump(mode="json") for k, e in entries.items()}
        base["metrics"] = json.loads(json.dumps(metrics, default=float))
        base["model_set_version"] = model_set_version(base, created)
        write_manifest(Manifest.model_validate(base), staging)
        load_manifest(staging, list(data.sensors))  # refuse to publish what the agent would
        out.mkdir(parents=True, exist_ok=True)
        for name in (*MODEL_FILES.values(), MANIFEST_NAME):  # manifest last
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = load_manifest(out, list(data.sensors))
    ModelSet.load(out, threads=1)  # and onnxruntime accepts the published files
    clock.say(f"model set {manifest.model_set_version} written to {out}/")

    result = TrainResult(
        out_dir=out,
        manifest=manifest,
        data=data,
        split=split,
        iforest=fitted.forest,
        lstm_scoring_model=fitted.scoring_model,
        history=fitted.history,
        validation=val_scored,
        test=test_scored,
        metrics=metrics,
        timings=clock.timings,
    )
    if cfg.report:
        from .report import write_report

        with clock.phase("report", "writing the report"):
            result.report_path = write_report(result)
        clock.say(f"report: {result.report_path}")
    record_run(cfg, result, clock.say)  # MLflow run + registry version (unless turned off)
    clock.say(f"total {time.perf_counter() - clock.started:.1f}s")
    return result


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"
