"""``train(cfg)``: CSV in, verified model set (two ONNX files + manifest.json + report) out.

The order matters and is the point of this module:

1. load and validate the CSV; hold out a test part at its end only when asked (labelled
   data: evaluation) — everything else is the fit part;
2. fit both models on the fit part and score every fit window *out of sample* (k-fold, or a
   hold-out for large data: :mod:`training.calibration`). Labels never fit a model or place
   a threshold: the fit part is taken as normal operation, as a plant's history is;
3. export both to ONNX; place per-model thresholds, the normalisation and the one ensemble
   threshold on the out-of-sample scores at the stated false-alarm rate;
4. evaluate **through onnxruntime** (:class:`edge_agent.pipeline.scoring.ModelSet`, the agent's own
   code) on the test part or a separate labelled file, as point decisions and as alarm
   episodes after the agent's on/off delays;
5. write the manifest, load it back with :func:`edge_agent.pipeline.manifest.load_manifest`, and
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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import edge_agent
from edge_agent.config import AlarmSettings, InstrumentRange
from edge_agent.pipeline.ensemble import Votes, vote
from edge_agent.pipeline.features import FeatureSpec, default_feature_spec
from edge_agent.pipeline.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    ModelEntry,
    VotingEntry,
    load_manifest,
    sha256_file,
)
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, SensorSpec
from edge_agent.pipeline.windows import sliding_windows

from . import calibration
from .alarm_eval import alarm_states
from .data import DataError, Dataset, DataSpec, Split, chronological_split, load_csv
from .fitting import FitSettings, FittedPair, SeriesView, fit_pair, native_scores
from .metrics import detection_metrics
from .tracking import TrackingSection, record_run

Progress = Callable[[str], None]
MODEL_KEYS = ("iforest", "lstm_ae")
MODEL_FILES = {"iforest": "iforest.onnx", "lstm_ae": "lstm_ae.onnx"}
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
    #: Instrument ranges (what a transmitter can report) for sensors without a known spec;
    #: readings outside them are impossible and rejected by the agent. Nothing else is.
    instrument_ranges: dict[str, InstrumentRange] = Field(default_factory=dict)

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
    #: Share of the steps at the end held out for evaluation; "auto": 0.2 when the data
    #: has labels (and no separate evaluation file is given), else 0 — every row fits.
    test: float | Literal["auto"] = "auto"

    @model_validator(mode="after")
    def _fraction(self) -> SplitSection:
        if self.test != "auto" and not 0 <= self.test < 1:
            raise ValueError("test must be 'auto' or a fraction in [0, 1)")
        return self


class CalibrationSection(_Section):
    #: Quantile of out-of-sample normal scores that each threshold is: the stated point
    #: false-alarm rate is 1 - quantile.
    quantile: float = Field(default=0.995, gt=0, lt=1)
    folds: int = Field(default=5, ge=2, le=20)
    #: k-fold up to this many fit windows; above it a hold-out (k refits would cost minutes).
    kfold_max_windows: int = Field(default=20000, ge=10)
    holdout: float = Field(default=0.2, gt=0, lt=1)
    #: Last share of each model's training windows that stops the LSTM early.
    early_stopping_tail: float = Field(default=0.1, gt=0, lt=0.5)
    #: Stated false-alarm rate of the *alarms* (per unit per day of normal operation, with
    #: the agent's on_delay): raises the ensemble threshold where the point rate alone would
    #: alarm more often. null = the point rate only (see training.calibration).
    alarms_per_day: float | None = Field(default=None, gt=0)


class IForestSection(_Section):
    n_estimators: int = Field(default=200, ge=1)
    max_samples: int = Field(default=256, ge=2)
    contamination: float | Literal["auto"] = "auto"


class LstmSection(_Section):
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=64, ge=1)
    patience: int = Field(default=4, ge=1)
    max_train_windows: int | None = Field(default=5000, ge=1)


class SimulatorSection(_Section):
    steps: int = Field(default=100000, ge=1000)
    events: int = Field(default=60, ge=0)
    #: Out of sample for the demo and the tests, which simulate seeds 0..N.
    seed: int = 7
    day_seconds: float = Field(default=3600.0, gt=0)
    #: Units of the same design simulated one after another (steps and events are totals).
    units: int = Field(default=4, ge=1)


def _default_voting() -> VotingEntry:
    return VotingEntry(strategy="calibrated", weights={"iforest": 0.5, "lstm_ae": 0.5})


class TrainConfig(_Section):
    """Everything ``train`` needs; ``config/training.yaml`` documents every key."""

    seed: int = 0
    threads: int = Field(default=2, ge=1)
    output_dir: Path = Path("models")
    window: int = Field(default=60, ge=2)
    rolling: int = Field(default=10, ge=2)
    report: bool = True
    #: A separate labelled CSV (same columns) to evaluate on instead of a test part.
    eval_data: Path | None = None
    data: DataSection = Field(default_factory=DataSection)
    split: SplitSection = Field(default_factory=SplitSection)
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)
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
    alarm: AlarmSettings | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Detection metrics per model and for the ensemble (labels required), as point
    decisions (``point``) and as alarm states after the on/off delays (``alarm``).

    ``settle_steps`` is normally window - 1: see :func:`training.metrics.settled_far_percent`.
    """
    if scored.labels is None:
        raise DataError("metrics need labels; this data has no label column")
    votes = scored.votes(models, voting)
    flags = {**votes.decisions, "ensemble": votes.ensemble_decision}
    return {
        "point": {
            key: detection_metrics(scored.labels, d, step_seconds, settle_steps)
            for key, d in flags.items()
        },
        "alarm": {
            key: detection_metrics(
                scored.labels,
                alarm_states(d, scored.timestamps, alarm),
                step_seconds,
                settle_steps,
            )
            for key, d in flags.items()
        },
    }


# --- helpers ---------------------------------------------------------------------------------


#: Stated false alarms per sensor per day of the health limits when the config states no
#: alarm rate (a health limit needs one: a point rate would flag healthy sensors daily).
HEALTH_ALARMS_PER_DAY = 0.1


def sensor_entries(
    data: Dataset,
    fit: slice,
    configured: dict[str, Any],
    rolling: int = 10,
    alarms_per_day: float | None = None,
    health: slice | None = None,
) -> list[SensorSpec]:
    """Instrument range (a known sensor's spec, or ``data.instrument_ranges``; else none),
    training envelope (the fit part's range) and health limits per sensor.

    Nothing derived from the data ever rejects a reading: the envelope only tells the
    alert which sensor left what training saw; the health limits (frozen run, roughness,
    see :mod:`edge_agent.pipeline.sensor_health`) raise a bad-quality alarm, placed like the
    ensemble's alarm threshold so that a healthy sensor stays quiet, on the ``health``
    steps (the calibration's out-of-sample stretch: for a hold-out, the tail the models never
    saw; a file of several units one after another has jumps between them elsewhere).
    """
    from edge_agent.pipeline.sensor_health import longest_runs, roughness_series

    known = {s.name: s for s in THERMAL_UNIT_SENSORS}
    values = data.values[fit]
    checked = values if health is None else data.values[health]
    runs = longest_runs(checked)
    rough = roughness_series(checked, rolling)
    days = len(checked) * data.step_seconds / 86400
    on_delay = AlarmSettings().on_delay
    specs = []
    for j, name in enumerate(data.sensors):
        base = known.get(name, SensorSpec(name, ""))
        rng = configured.get(name)
        if rng is not None:
            base = replace(
                base,
                lo=base.lo if rng.lo is None else rng.lo,
                hi=base.hi if rng.hi is None else rng.hi,
            )
        r = rough[:, j]
        eps = 1e-9 + 1e-6 * float(np.std(checked[:, j]))
        log_r = np.log(r + eps)
        limit, _ = calibration.alarm_threshold(
            log_r,
            float(np.quantile(log_r, 0.995)),
            on_delay,
            days,
            alarms_per_day or HEALTH_ALARMS_PER_DAY,
        )
        specs.append(
            replace(
                base,
                envelope_lo=float(values[:, j].min()),
                envelope_hi=float(values[:, j].max()),
                frozen_limit_steps=int(max(2 * runs[j], 2 * rolling)),
                roughness_hi=float(np.exp(limit) - eps),
            )
        )
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
    #: Out-of-sample scores of the fit part (what the thresholds were placed on).
    calibration: ScoredSteps
    #: The evaluated steps (test part or evaluation file); None without either.
    test: ScoredSteps | None
    metrics: dict[str, Any]
    #: The dataset ``test.steps`` index (``data`` itself, or the evaluation file).
    test_data: Dataset | None = None
    #: Window-end steps of each calibration fold (k-fold) or of the hold-out (one).
    calibration_folds: list[NDArray[np.int64]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None
    plan_mode: str = "kfold"


def _check_parts(data: Dataset, split: Split, cfg: TrainConfig) -> None:
    sizes = split.sizes()
    need = 2 * cfg.window + 2 * cfg.calibration.folds
    if sizes["fit"] < need:
        raise DataError(
            f"{data.source}: {sizes['fit']} steps to fit are too few for window {cfg.window} "
            f"and {cfg.calibration.folds} folds (needs >= {need})"
        )
    if 0 < sizes["test"] < cfg.window:
        raise DataError(
            f"{data.source}: the test part has {sizes['test']} steps (needs >= {cfg.window})"
        )
    fit = data.values[split.fit]
    flat = [s for j, s in enumerate(data.sensors) if np.ptp(fit[:, j]) == 0]
    if flat:
        raise DataError(
            f"{data.source}: sensors {flat} are constant in the fit part "
            f"(first {sizes['fit']} steps); a constant sensor cannot be scaled"
        )


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
    """The final native models, and the out-of-sample scores of the fit part."""

    spec: FeatureSpec
    final: FittedPair
    lstm_center: NDArray[np.float32]
    lstm_scale: NDArray[np.float32]
    plan: calibration.Plan
    #: Out-of-sample scores per model, for ``plan.scored`` (window-end steps of the fit part).
    oos: dict[str, NDArray[np.float64]]


def _fit_settings(cfg: TrainConfig) -> FitSettings:
    return FitSettings(
        window=cfg.window,
        n_estimators=cfg.iforest.n_estimators,
        max_samples=cfg.iforest.max_samples,
        contamination=cfg.iforest.contamination,
        epochs=cfg.lstm_ae.epochs,
        batch_size=cfg.lstm_ae.batch_size,
        patience=cfg.lstm_ae.patience,
        max_train_windows=cfg.lstm_ae.max_train_windows,
        early_stopping_tail=cfg.calibration.early_stopping_tail,
        seed=cfg.seed,
        threads=cfg.threads,
    )


def _fit_models(cfg: TrainConfig, data: Dataset, split: Split, clock: Clock) -> _Fitted:
    """Final models on every fit window; out-of-sample scores of every fit window from fold
    models (k-fold) or of the hold-out tail (large data). No labels are used."""
    with clock.phase("imports", "importing scikit-learn and TensorFlow"):
        from . import lstm_ae as lstm_mod  # heavy imports only when training

    lstm_mod.set_tf_threads(cfg.threads)
    values = data.values[split.fit]
    spec = default_feature_spec(data.sensors, cfg.rolling)
    view = SeriesView(values, spec, cfg.window)
    center, scale = lstm_mod.fit_scaler(values)
    c = cfg.calibration
    try:
        plan = calibration.plan(len(values), cfg.window, c.folds, c.kfold_max_windows, c.holdout)
    except ValueError as exc:
        raise DataError(f"{data.source}: {exc}") from None
    fs = _fit_settings(cfg)
    positions = {int(t): i for i, t in enumerate(plan.scored)}
    oos = {k: np.full(len(plan.scored), np.nan) for k in MODEL_KEYS}

    def keep(ends: NDArray[np.int64], scores: dict[str, NDArray[np.float64]]) -> None:
        idx = np.array([positions[int(t)] for t in ends], dtype=np.int64)
        for k, v in scores.items():
            oos[k][idx] = v

    if plan.mode == "holdout":
        fold = plan.folds[0]
        with clock.phase(
            "fit",
            f"fitting both models on {len(fold.train)} windows; the last "
            f"{len(fold.held_out)} are held out to place the thresholds",
        ):
            final = fit_pair(view, fold.train, center, scale, fs, clock.say)
        keep(fold.held_out, native_scores(final, view, fold.held_out))
    else:
        with clock.phase("fit", f"fitting both models on all {len(plan.final_train)} fit windows"):
            final = fit_pair(view, plan.final_train, center, scale, fs, clock.say)
        for j, fold in enumerate(plan.folds, 1):
            with clock.phase(
                f"fold_{j}",
                f"fold {j}/{len(plan.folds)}: refitting on {len(fold.train)} windows, "
                f"scoring {len(fold.held_out)} held out",
            ):
                pair = fit_pair(view, fold.train, center, scale, fs, lambda _m: None)
                keep(fold.held_out, native_scores(pair, view, fold.held_out))
    return _Fitted(spec, final, center, scale, plan, oos)


def _export(
    cfg: TrainConfig, fitted: _Fitted, n_sensors: int, directory: Path
) -> dict[str, ModelEntry]:
    """Both ONNX files into ``directory``; their manifest entries (thresholds still unset)."""
    from . import iforest as iforest_mod
    from . import lstm_ae as lstm_mod

    if_path = directory / MODEL_FILES["iforest"]
    lstm_path = directory / MODEL_FILES["lstm_ae"]
    final = fitted.final
    if_info = iforest_mod.export_iforest(final.forest, fitted.spec.n_features, if_path)
    lstm_info = lstm_mod.export_lstm_ae(final.scoring_model, cfg.window, n_sensors, lstm_path)
    history = final.history
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
                "training_rows": final.iforest_rows,
                "onnx_nodes": if_info.get("nodes"),
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
                "training_windows": final.lstm_windows,
                "seed": cfg.seed,
            },
        ),
    }


def _manifest_dict(
    cfg: TrainConfig,
    data: Dataset,
    split: Split,
    fitted: _Fitted,
    entries: dict[str, ModelEntry],
    voting: VotingEntry,
    created: datetime,
) -> dict[str, Any]:
    from .iforest import scaler_params

    return {
        "format_version": FORMAT_VERSION,
        "model_set_version": "pending",
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "training_data_sha256": data.sha256,
        "sensors": [
            s.to_dict()
            for s in sensor_entries(
                data,
                split.fit,
                cfg.data.instrument_ranges,
                cfg.rolling,
                cfg.calibration.alarms_per_day,
                slice(int(fitted.plan.scored[0]) - cfg.window + 1, int(fitted.plan.scored[-1]) + 1),
            )
        ],
        "window": cfg.window,
        "step_seconds": data.step_seconds,
        "features": fitted.spec.to_dict(),
        "scalers": {
            "note": SCALER_NOTE,
            "iforest": {"kind": "robust", **scaler_params(fitted.final.forest)},
            "lstm_ae": {
                "kind": "standard",
                "center": [float(v) for v in fitted.lstm_center],
                "scale": [float(v) for v in fitted.lstm_scale],
            },
        },
        "models": {k: e.model_dump(mode="json") for k, e in entries.items()},
        "voting": voting.model_dump(mode="json"),
        "versions": package_versions(),
    }


def _calibration_steps(data: Dataset, fitted: _Fitted, cal: calibration.Calibration) -> ScoredSteps:
    idx = fitted.plan.scored
    return ScoredSteps(
        steps=idx,
        timestamps=data.timestamps[idx],
        values=data.values[idx],
        labels=None if data.labels is None else data.labels[idx],
        scores=dict(cal.scores),
        per_sensor=None,
        seconds=0.0,
    )


def _evaluation_data(cfg: TrainConfig, data: Dataset) -> Dataset | None:
    if cfg.eval_data is None:
        return None
    spec = cfg.data.spec().with_overrides(sensors=tuple(data.sensors))
    evaluation = load_csv(cfg.eval_data, spec)
    if evaluation.step_seconds != data.step_seconds:
        raise DataError(
            f"{evaluation.source}: step {evaluation.step_seconds:g}s differs from the "
            f"training data's {data.step_seconds:g}s"
        )
    return evaluation


def _evaluate(
    cfg: TrainConfig,
    entries: dict[str, ModelEntry],
    voting: VotingEntry,
    scored: ScoredSteps | None,
    cal: ScoredSteps,
    step_seconds: float,
    clock: Clock,
) -> dict[str, Any]:
    """Out-of-sample behaviour on the fit part (always), and detection metrics on the
    evaluated steps when they have labels."""
    cal_votes = cal.votes(entries, voting)
    days = len(cal) * step_seconds / 86400
    alarms = alarm_states(cal_votes.ensemble_decision, cal.timestamps)
    episodes = int(np.sum(np.diff(np.concatenate(([0], alarms.astype(np.int8)))) == 1))
    out: dict[str, Any] = {
        "out_of_sample": {
            "steps": len(cal),
            "flagged_percent": {
                **{k: 100 * float(d.mean()) for k, d in cal_votes.decisions.items()},
                "ensemble": 100 * float(cal_votes.ensemble_decision.mean()),
            },
            "alarm_episodes": episodes,
            "alarm_episodes_per_day": episodes / days if days > 0 else None,
        }
    }
    clock.say(
        f"out of sample (fit part, {len(cal)} steps): ensemble flags "
        f"{out['out_of_sample']['flagged_percent']['ensemble']:.2f}% of steps, "
        f"{episodes} alarm episodes"
    )
    if scored is None:
        return out
    if scored.labels is None:
        votes = scored.votes(entries, voting)
        flagged = {k: 100 * float(d.mean()) for k, d in votes.decisions.items()}
        flagged["ensemble"] = 100 * float(votes.ensemble_decision.mean())
        out["test"] = {"flagged_percent": flagged}
        return out
    result = evaluate_scored(scored, entries, voting, step_seconds, cfg.window - 1)
    out["test"], out["test_alarm"] = result["point"], result["alarm"]
    for level, table in (("point", result["point"]), ("alarm", result["alarm"])):
        for key, m in table.items():
            clock.say(
                f"test {level:5s} {key:8s} F1 {_fmt(m['f1'])}  FAR {_fmt(m['far_percent'])}% "
                f"MAR {_fmt(m['mar_percent'])}%  events {m['events_detected']}/{m['events']}  "
                f"delay {_fmt(m['mean_detection_delay_seconds'], 1)}s  "
                f"false alarms/day {_fmt(m['false_alarms_per_day'], 1)}"
            )
    return out


def train(cfg: TrainConfig, progress: Progress = print) -> TrainResult:
    """Fit, export, calibrate, evaluate and write one model set (see module docstring)."""
    clock = Clock(progress)
    if cfg.data.path is None:
        raise DataError("no training data: give --data CSV or set data.path in the config")
    out = Path(cfg.output_dir)

    with clock.phase("load", f"loading {cfg.data.path}"):
        data = load_csv(cfg.data.path, cfg.data.spec())
        evaluation = _evaluation_data(cfg, data)
    clock.say(
        f"{data.rows_read} rows -> {data.n_steps} steps of {data.step_seconds:g}s, "
        f"{len(data.sensors)} sensors {list(data.sensors)}, "
        + (
            f"{100 * data.labels.mean():.2f}% labelled anomalous (labels evaluate only)"
            if data.labels is not None
            else "no labels"
        )
        + (f", {data.interpolated_cells} cells interpolated" if data.interpolated_cells else "")
        + (f", ignored columns {list(data.ignored_columns)}" if data.ignored_columns else "")
    )
    test_fraction = cfg.split.test
    if test_fraction == "auto":
        test_fraction = 0.2 if data.labels is not None and evaluation is None else 0.0
    split = chronological_split(data.n_steps, test_fraction)
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
        cal = calibration.calibrate(
            fitted.plan.scored,
            fitted.oos,
            entries,
            cfg.voting.weights,
            cfg.calibration.quantile,
            cfg.voting.fusion,
        )
        entries = cal.apply(entries)
        fused_threshold = cal.fused_threshold
        alarm_cal: dict[str, float] | None = None
        if cfg.calibration.alarms_per_day is not None:
            days = len(cal.steps) * data.step_seconds / 86400
            fused_threshold, alarm_cal = calibration.alarm_threshold(
                cal.fused,
                cal.fused_threshold,
                AlarmSettings().on_delay,
                days,
                cfg.calibration.alarms_per_day,
            )
            clock.say(
                f"alarm calibration: {cfg.calibration.alarms_per_day:g} alarms/day stated; "
                f"quiet level {alarm_cal['quiet_level']:.4g} + margin "
                f"{alarm_cal['margin']:.4g} -> ensemble threshold {fused_threshold:.4g}"
            )
        voting = cfg.voting.model_copy(
            update={"fused_threshold": fused_threshold, "quantile": cal.quantile}
        )
        clock.say(
            f"calibrated on {len(cal.steps)} out-of-sample steps ({fitted.plan.mode}): "
            + ", ".join(f"{k} threshold {v:.5g}" for k, v in cal.thresholds.items())
            + f", ensemble threshold {cal.fused_threshold:.4g} (q{cal.quantile})"
        )
        created = datetime.now(UTC).replace(microsecond=0)
        base = _manifest_dict(cfg, data, split, fitted, entries, voting, created)
        write_manifest(Manifest.model_validate(base), staging)
        model_set = ModelSet.load(staging, threads=cfg.threads)
        test_scored: ScoredSteps | None = None
        with clock.phase("evaluation", "scoring the evaluation steps with onnxruntime"):
            if evaluation is not None:
                test_scored = score_steps(model_set, evaluation, slice(0, evaluation.n_steps))
            elif split.test.stop > split.test.start:
                test_scored = score_steps(model_set, data, split.test)
        cal_steps = _calibration_steps(data, fitted, cal)
        metrics: dict[str, Any] = {
            "data": {
                "source": data.source.name,
                "rows": data.rows_read,
                "steps": data.n_steps,
                "step_seconds": data.step_seconds,
                "interpolated_cells": data.interpolated_cells,
                "split_steps": split.sizes(),
                "labelled": data.labels is not None,
                "evaluation_file": None if evaluation is None else evaluation.source.name,
                "iforest_training_rows": fitted.final.iforest_rows,
                "lstm_training_windows": fitted.final.lstm_windows,
                "calibration_mode": fitted.plan.mode,
                "folds": len(fitted.plan.folds) if fitted.plan.mode == "kfold" else 0,
            },
            "thresholds": {
                **cal.summary(),
                "point_fused_threshold": cal.fused_threshold,
                "fused_threshold": fused_threshold,
            },
            "alarm_calibration": alarm_cal,
            "train_seconds": {
                k: v for k, v in clock.timings.items() if k == "fit" or k.startswith("fold_")
            },
            "lstm_ae_history": fitted.final.history,
            **_evaluate(cfg, entries, voting, test_scored, cal_steps, data.step_seconds, clock),
            "timings_seconds": dict(clock.timings),
        }
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
        iforest=fitted.final.forest,
        lstm_scoring_model=fitted.final.scoring_model,
        history=fitted.final.history,
        calibration=cal_steps,
        test=test_scored,
        metrics=metrics,
        timings=clock.timings,
        plan_mode=fitted.plan.mode,
        test_data=None if test_scored is None else (evaluation or data),
        calibration_folds=[f.held_out for f in fitted.plan.folds],
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
