"""SKAB outlier detection with the project's own models, scored the way the agent scores.

Protocol (SKAB's published outlier-detection leaderboard): for every experiment file
separately, fit on its first 400 rows and predict the remaining rows; concatenate all
test predictions and labels and report F1, FAR (% of normal test points flagged) and MAR
(% of anomalous test points missed). A point's decision uses only data up to and including
that point: step t is judged from the window of ``--window`` rows ending at t, and decision
smoothing (``--smooth K/N``) only looks back.

Everything runs through the product: features from :mod:`edge_agent.features`, windows
from :mod:`edge_agent.windows`, the Isolation Forest and LSTM autoencoder from
:mod:`training.iforest` / :mod:`training.lstm_ae`, exported to ONNX and written as a model
set with a verified manifest per file, scored by onnxruntime through
:class:`edge_agent.scoring.ModelSet` and combined by :func:`edge_agent.ensemble.vote`.

One configuration for all files, chosen without test labels:

* window 30 (not the product's 60): 400 fit rows leave only ~340 windows of 60;
* sensors whose *level* wanders within normal operation (median over all files' fit rows of
  the shift between the fit rows' two halves, in units of the first half's spread, above
  ``--drift-limit``) are left out: a model that judges levels (both do) would flag the drift
  itself. On SKAB that drops Temperature and Thermocouple, which warm up slowly;
* the LSTM trains on the first 320 fit rows and stops early on the last 80;
* thresholds are the product's quantile (0.995) of the scores of all fit-row windows: 80
  validation windows are too few to place a 99.5 % quantile;
* voting is the product's default (weighted, iforest 0.4 / lstm_ae 0.6, threshold 0.5).

    python benchmarks/skab.py --data ../shared/data/skab   [--help for every option]

Writes ``benchmarks/results/skab.json``. The data is read in place and never copied.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from edge_agent.ensemble import vote
from edge_agent.features import compute_series_features, default_feature_spec
from edge_agent.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    ModelEntry,
    VotingEntry,
    sha256_file,
)
from edge_agent.scoring import ModelSet
from edge_agent.sensors import SensorSpec
from edge_agent.windows import sliding_windows
from training.metrics import detection_metrics, point_metrics
from training.thresholds import quantile_threshold, score_scale

Progress = Callable[[str], None]

#: SKAB column -> (sensor name in the model set, unit, description).
SKAB_SENSORS: dict[str, tuple[str, str, str]] = {
    "Accelerometer1RMS": ("accelerometer1_rms", "g", "pump vibration, accelerometer 1 RMS"),
    "Accelerometer2RMS": ("accelerometer2_rms", "g", "pump vibration, accelerometer 2 RMS"),
    "Current": ("current", "A", "motor current"),
    "Pressure": ("pressure", "bar", "pump outlet pressure"),
    "Temperature": ("temperature", "degC", "motor body temperature"),
    "Thermocouple": ("thermocouple", "degC", "circulating fluid temperature"),
    "Voltage": ("voltage", "V", "motor voltage"),
    "Volume Flow RateRMS": ("volume_flow_rate_rms", "l/min", "circulation flow rate"),
}
SENSOR_NAMES: tuple[str, ...] = tuple(v[0] for v in SKAB_SENSORS.values())
LABEL_COLUMN = "anomaly"
TIME_COLUMN = "datetime"
STEP_SECONDS = 1.0
MODELS = ("iforest", "lstm_ae")

#: Published leaderboard, outlier detection, all 34 experiment files of SKAB v0.9.
LEADERBOARD: dict[str, dict[str, float]] = {
    "Conv-AE": {"f1": 0.78, "far_percent": 13.55, "mar_percent": 28.02},
    "LSTM-AE": {"f1": 0.74, "far_percent": 29.96, "mar_percent": 25.92},
    "Isolation forest": {"f1": 0.29, "far_percent": 2.56, "mar_percent": 82.89},
}
TARGETS = {"f1": (">=", 0.80), "far_percent": ("<=", 15.0), "mar_percent": ("<=", 25.0)}
#: Thresholds recomputed from the stored scores, reported beside the result (never used to
#: pick the configuration): (source, quantile); quantile 1.0 is the maximum.
SENSITIVITY: tuple[tuple[str, float], ...] = tuple(
    (source, q) for source in ("fit", "validation") for q in (0.95, 0.99, 0.995, 1.0)
)


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkabFile:
    """One SKAB CSV: readings in :data:`SKAB_SENSORS` order and, if present, 0/1 labels."""

    path: Path
    name: str
    values: NDArray[np.float32]
    labels: NDArray[np.int8] | None

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def has_anomalies(self) -> bool:
        return self.labels is not None and bool(self.labels.any())


def read_skab_csv(path: Path, name: str | None = None) -> SkabFile:
    """Read a ``;``-separated SKAB file row by row (no resampling: the protocol counts rows)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=";")
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        missing = [c for c in SKAB_SENSORS if c not in header]
        if missing:
            raise ValueError(f"{path}: not a SKAB file, columns {missing} missing")
        cols = [header.index(c) for c in SKAB_SENSORS]
        label_col = header.index(LABEL_COLUMN) if LABEL_COLUMN in header else None
        rows: list[list[float]] = []
        labels: list[int] = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            try:
                rows.append([float(row[c]) for c in cols])
                if label_col is not None:
                    labels.append(int(float(row[label_col])))
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{line}: cannot read row: {exc}") from None
    values = np.asarray(rows, dtype=np.float32).reshape(-1, len(SKAB_SENSORS))
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: readings contain NaN or inf")
    y = np.asarray(labels, dtype=np.int8) if label_col is not None else None
    if y is not None and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{path}: the {LABEL_COLUMN} column must hold 0 or 1")
    return SkabFile(path, name or path.name, values, y)


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_skab_files(root: Path) -> list[SkabFile]:
    """Every SKAB CSV under ``root`` (recursively), in natural order, named relative to root."""
    root = Path(root)
    paths = sorted((p for p in root.rglob("*.csv") if p.is_file()), key=_natural_key)
    if not paths:
        raise FileNotFoundError(f"{root}: no .csv files found")
    return [read_skab_csv(p, str(p.relative_to(root))) for p in paths]


# --- configuration ----------------------------------------------------------------------------


def _product_voting() -> VotingEntry:
    return VotingEntry(strategy="weighted", weights={"iforest": 0.4, "lstm_ae": 0.6}, threshold=0.5)


@dataclass(frozen=True)
class ProtocolConfig:
    """One configuration for every file; ``python benchmarks/skab.py --help`` explains each."""

    fit_rows: int = 400
    validation_rows: int = 80
    window: int = 30
    rolling: int = 10
    sensors: tuple[str, ...] | None = None  # None: every sensor within drift_limit
    drift_limit: float = 0.5
    threshold_quantile: float = 0.995  # 1.0 = the maximum
    threshold_source: str = "fit"  # "fit" (all fit-row windows) or "validation"
    smooth_k: int = 1
    smooth_n: int = 1
    n_estimators: int = 200
    max_samples: int = 256
    epochs: int = 30
    batch_size: int = 32
    patience: int = 4
    seed: int = 0
    threads: int = 2
    normal_segments: int = 0  # anomaly-free segments to measure FAR on (0 = skip that check)
    voting: VotingEntry = field(default_factory=_product_voting)

    def __post_init__(self) -> None:
        problems = []
        if self.validation_rows < 1 or self.validation_rows >= self.fit_rows:
            problems.append("validation_rows must be in [1, fit_rows)")
        if not 2 <= self.rolling <= self.window:
            problems.append("rolling must be in [2, window]")
        if self.window > self.fit_rows - self.validation_rows:
            problems.append("window must fit in the training rows (fit_rows - validation_rows)")
        if not 0 < self.threshold_quantile <= 1:
            problems.append("threshold_quantile must be in (0, 1]")
        if self.threshold_source not in ("fit", "validation"):
            problems.append("threshold_source must be 'fit' or 'validation'")
        if not 1 <= self.smooth_k <= self.smooth_n:
            problems.append("smoothing needs 1 <= K <= N")
        if self.drift_limit <= 0:
            problems.append("drift_limit must be positive")
        if self.normal_segments < 0:
            problems.append("normal_segments must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["voting"] = self.voting.model_dump(mode="json")
        d["sensors"] = None if self.sensors is None else list(self.sensors)
        return d


# --- sensor choice (label-free) ---------------------------------------------------------------


def level_drift(fit_values: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Per sensor: |mean(second half) - mean(first half)| / std(first half) of the fit rows.

    Noise alone gives ~0.1 for 200 rows; a sensor well above 0.5 changes its level within
    normal operation faster than its own spread, which a level-judging model cannot tell
    from a fault.
    """
    x = np.asarray(fit_values, dtype=np.float64)
    half = x.shape[0] // 2
    first, second = x[:half], x[half : 2 * half]
    shift = np.abs(second.mean(axis=0) - first.mean(axis=0))
    spread = first.std(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = shift / spread
    # a sensor flat in the first half: no drift if it stays put, infinite if it moves
    return np.where(spread > 0, ratio, np.where(shift > 0, np.inf, 0.0))


def choose_sensors(
    files: Sequence[SkabFile], cfg: ProtocolConfig
) -> tuple[list[int], dict[str, float]]:
    """Indices of the sensors to model, and the median drift of every sensor over files.

    Uses only the fit rows of the experiment files: the same data the protocol fits on.
    """
    drifts = np.array([level_drift(f.values[: cfg.fit_rows]) for f in files])
    median = np.median(drifts, axis=0)
    table = {name: float(v) for name, v in zip(SENSOR_NAMES, median, strict=True)}
    if cfg.sensors is not None:
        unknown = [s for s in cfg.sensors if s not in SENSOR_NAMES]
        if unknown:
            raise ValueError(f"unknown sensors {unknown}; SKAB has {list(SENSOR_NAMES)}")
        return [SENSOR_NAMES.index(s) for s in cfg.sensors], table
    keep = [i for i, v in enumerate(median) if v <= cfg.drift_limit]
    if not keep:
        raise ValueError(f"every sensor drifts more than {cfg.drift_limit}: {table}")
    return keep, table


# --- decisions --------------------------------------------------------------------------------


def causal_k_of_n(flags: NDArray[np.bool_], k: int, n: int) -> NDArray[np.bool_]:
    """Step t is flagged when at least k of steps t-n+1 … t are (fewer before the start)."""
    f = np.asarray(flags, dtype=bool)
    if k == 1 and n == 1:
        return f.copy()
    counts = np.convolve(f.astype(np.int64), np.ones(n, dtype=np.int64))[: f.size]
    return np.asarray(counts >= k)


def threshold_of(scores: NDArray[np.float64], quantile: float) -> float:
    """The product's quantile threshold; quantile 1.0 means the largest score."""
    if quantile >= 1.0:
        return float(np.max(scores))
    return quantile_threshold(scores, quantile)


# --- one file ---------------------------------------------------------------------------------


@dataclass
class FileRun:
    """Scores and decisions of one file for every step with a full window."""

    name: str
    first_step: int  # step of scores[...][0] (= window - 1)
    scores: dict[str, NDArray[np.float64]]
    decisions: dict[str, NDArray[np.bool_]]  # per model and "ensemble", smoothed
    labels: NDArray[np.int8]
    models: dict[str, ModelEntry]  # the manifest entries the agent would run
    info: dict[str, Any]

    def test_slice(self, fit_rows: int) -> slice:
        return slice(fit_rows - self.first_step, None)


def _sensor_specs(fit_values: NDArray[np.float32], idx: list[int]) -> list[SensorSpec]:
    """Data range of the fit rows with a wide margin (the agent rejects readings outside)."""
    specs = []
    for j, i in enumerate(idx):
        lo, hi = float(fit_values[:, j].min()), float(fit_values[:, j].max())
        margin = max(hi - lo, 1e-3 * max(1.0, abs(lo), abs(hi)))
        name, unit, description = SKAB_SENSORS[list(SKAB_SENSORS)[i]]
        specs.append(SensorSpec(name, unit, lo - 10 * margin, hi + 10 * margin, description))
    return specs


def _entry(key: str, info: dict[str, Any], path: Path, params: dict[str, Any]) -> ModelEntry:
    return ModelEntry(
        kind=key,  # type: ignore[arg-type]
        file=path.name,
        sha256=sha256_file(path),
        input_name=info["input_name"],
        input_kind="features" if key == "iforest" else "window",
        input_shape=list(info["input_shape"]),
        score_output=info["score_output"],
        score_sign=info["score_sign"],
        per_sensor_output=info.get("per_sensor_output"),
        threshold=0.0,  # set from the fit rows' scores once onnxruntime can score them
        score_scale=1.0,
        params=params,
    )


def _write_manifest(manifest: Manifest, directory: Path) -> None:
    text = json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
    (directory / MANIFEST_NAME).write_text(text, encoding="utf-8")


def score_series(model_set: ModelSet, series: NDArray[np.float32]) -> dict[str, Any]:
    """Scores and votes for every step with a full window, through the agent's ModelSet."""
    windows = sliding_windows(series, model_set.window)
    batch = model_set.score(windows)
    return {
        "scores": batch.scores,
        "decisions": batch.votes.decisions,
        "ensemble": batch.votes.ensemble_decision,
    }


def fit_model_set(
    fit_values: NDArray[np.float32],
    sensors: list[SensorSpec],
    cfg: ProtocolConfig,
    out_dir: Path,
    *,
    name: str = "skab",
) -> tuple[ModelSet, dict[str, Any]]:
    """Fit both models on the fit rows, export them, set thresholds, write a verified set.

    Returns the final ModelSet (loaded from disk by the agent's own loader) and what was
    learnt along the way (thresholds, epochs, timings).
    """
    from training.iforest import export_iforest, fit_iforest
    from training.lstm_ae import export_lstm_ae, fit_lstm_ae, fit_scaler

    timings: dict[str, float] = {}
    names = [s.name for s in sensors]
    spec = default_feature_spec(names, cfg.rolling)

    t0 = time.perf_counter()
    features = compute_series_features(fit_values, spec)
    forest = fit_iforest(
        features, n_estimators=cfg.n_estimators, max_samples=cfg.max_samples, seed=cfg.seed
    )
    timings["iforest_fit"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    train_rows = cfg.fit_rows - cfg.validation_rows
    windows = sliding_windows(fit_values, cfg.window)
    ends = np.arange(cfg.window - 1, len(fit_values))
    center, scale = fit_scaler(fit_values)
    scoring_model, history = fit_lstm_ae(
        np.ascontiguousarray(windows[ends < train_rows]),
        np.ascontiguousarray(windows[ends >= train_rows]),
        center,
        scale,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        patience=cfg.patience,
        seed=cfg.seed,
        max_train_windows=None,
        progress=lambda _: None,
    )
    timings["lstm_ae_fit"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if_path, lstm_path = out_dir / "iforest.onnx", out_dir / "lstm_ae.onnx"
    if_info = export_iforest(forest, spec.n_features, if_path)
    lstm_info = export_lstm_ae(scoring_model, cfg.window, len(names), lstm_path)
    timings["export"] = time.perf_counter() - t0
    best = int(np.argmin(history["val_loss"]))
    entries = {
        "iforest": _entry(
            "iforest",
            if_info,
            if_path,
            {
                "n_estimators": cfg.n_estimators,
                "max_samples": cfg.max_samples,
                "seed": cfg.seed,
                "training_rows": len(features),
            },
        ),
        "lstm_ae": _entry(
            "lstm_ae",
            lstm_info,
            lstm_path,
            {
                "epochs_run": len(history["loss"]),
                "best_epoch": best + 1,
                "best_val_loss": history["val_loss"][best],
                "batch_size": cfg.batch_size,
                "seed": cfg.seed,
            },
        ),
    }
    base: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_set_version": f"skab-{name}",
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "training_data_sha256": hashlib.sha256(np.ascontiguousarray(fit_values)).hexdigest(),
        "sensors": [s.to_dict() for s in sensors],
        "window": cfg.window,
        "step_seconds": STEP_SECONDS,
        "features": spec.to_dict(),
        "models": {k: e.model_dump(mode="json") for k, e in entries.items()},
        "voting": cfg.voting.model_dump(mode="json"),
    }
    _write_manifest(Manifest.model_validate(base), out_dir)  # provisional: no thresholds yet

    t0 = time.perf_counter()
    fit_scores = score_series(ModelSet.load(out_dir, names), fit_values)["scores"]
    n_val = cfg.validation_rows
    thresholds: dict[str, dict[str, float]] = {}
    for key in MODELS:
        s = fit_scores[key] if cfg.threshold_source == "fit" else fit_scores[key][-n_val:]
        th = threshold_of(s, cfg.threshold_quantile)
        sc = score_scale(s)
        entries[key] = entries[key].model_copy(update={"threshold": th, "score_scale": sc})
        thresholds[key] = {"threshold": th, "score_scale": sc}
    base["models"] = {k: e.model_dump(mode="json") for k, e in entries.items()}
    _write_manifest(Manifest.model_validate(base), out_dir)
    model_set = ModelSet.load(out_dir, names)  # verifies files, checksums, sensors, graph io
    timings["thresholds"] = time.perf_counter() - t0
    info = {
        "thresholds": thresholds,
        "lstm_ae_epochs": len(history["loss"]),
        "lstm_ae_best_val_loss": history["val_loss"][best],
        "iforest_onnx_nodes": if_info.get("nodes"),
        "seconds": timings,
    }
    return model_set, info


def model_dir_name(name: str) -> str:
    """A file's model-set directory: its relative path with separators made safe."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def run_file(
    data: SkabFile,
    sensor_idx: list[int],
    cfg: ProtocolConfig,
    work_dir: Path,
) -> FileRun:
    """Fit on the first ``fit_rows`` rows of one file, then judge every later row causally."""
    if data.n_rows <= cfg.fit_rows:
        raise ValueError(f"{data.name}: {data.n_rows} rows, needs more than {cfg.fit_rows}")
    series = np.ascontiguousarray(data.values[:, sensor_idx])
    fit_values = series[: cfg.fit_rows]
    sensors = _sensor_specs(fit_values, sensor_idx)
    out_dir = work_dir / model_dir_name(data.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_set, info = fit_model_set(fit_values, sensors, cfg, out_dir, name=out_dir.name)
    t0 = time.perf_counter()
    scored = score_series(model_set, series)
    info["seconds"]["scoring"] = time.perf_counter() - t0
    decisions = {
        k: causal_k_of_n(d, cfg.smooth_k, cfg.smooth_n) for k, d in scored["decisions"].items()
    }
    decisions["ensemble"] = causal_k_of_n(scored["ensemble"], cfg.smooth_k, cfg.smooth_n)
    labels = data.labels if data.labels is not None else np.zeros(data.n_rows, np.int8)
    first = cfg.window - 1
    models = dict(model_set.manifest.models)
    return FileRun(data.name, first, scored["scores"], decisions, labels[first:], models, info)


# --- pooling ----------------------------------------------------------------------------------


def pooled_metrics(runs: Sequence[FileRun], fit_rows: int) -> dict[str, dict[str, Any]]:
    """Point and event metrics per model and for the ensemble over all files' test rows."""
    labels = np.concatenate([r.labels[r.test_slice(fit_rows)] for r in runs])
    out = {}
    for key in (*MODELS, "ensemble"):
        flags = np.concatenate([r.decisions[key][r.test_slice(fit_rows)] for r in runs])
        out[key] = detection_metrics(labels, flags, STEP_SECONDS)
    return out


def sensitivity(runs: Sequence[FileRun], cfg: ProtocolConfig) -> list[dict[str, Any]]:
    """Pooled F1/FAR/MAR had the thresholds come from another quantile or source.

    Recomputed from the stored onnxruntime scores with the product's vote; reported for
    context only, never used to choose the configuration.
    """
    rows = []
    n_fit = cfg.fit_rows - cfg.window + 1
    for source, q in SENSITIVITY:
        labels, flags = [], {k: [] for k in (*MODELS, "ensemble")}
        for run in runs:
            updated = {}
            for key in MODELS:
                fit = run.scores[key][:n_fit]
                ref = fit if source == "fit" else fit[-cfg.validation_rows :]
                updated[key] = run.models[key].model_copy(
                    update={"threshold": threshold_of(ref, q)}
                )
            v = vote(run.scores, updated, cfg.voting)
            test = run.test_slice(cfg.fit_rows)
            labels.append(run.labels[test])
            for key in MODELS:
                flags[key].append(causal_k_of_n(v.decisions[key], cfg.smooth_k, cfg.smooth_n)[test])
            flags["ensemble"].append(
                causal_k_of_n(v.ensemble_decision, cfg.smooth_k, cfg.smooth_n)[test]
            )
        y = np.concatenate(labels)
        row: dict[str, Any] = {"source": source, "quantile": q}
        for key, parts in flags.items():
            m = point_metrics(y, np.concatenate(parts))
            row[key] = {k: m[k] for k in ("f1", "far_percent", "mar_percent")}
        rows.append(row)
    return rows


def normal_segments(
    files: Sequence[SkabFile], count: int, test_rows: int, fit_rows: int
) -> list[SkabFile]:
    """Up to ``count`` consecutive (fit_rows + test_rows)-row pieces of anomaly-free files.

    Each piece is an experiment without an anomaly: the protocol run on it measures the
    false-alarm rate on data known to be normal, which needs no test labels.
    """
    length = fit_rows + test_rows
    out: list[SkabFile] = []
    for f in files:
        for start in range(0, f.n_rows - length + 1, length):
            if len(out) == count:
                return out
            out.append(
                SkabFile(
                    f.path,
                    f"{f.name}[{start}:{start + length}]",
                    f.values[start : start + length],
                    np.zeros(length, np.int8),
                )
            )
    return out


def far_on_normal(
    segments: Sequence[SkabFile],
    sensor_idx: list[int],
    cfg: ProtocolConfig,
    work: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Share of test rows flagged per model when every row is normal (a label-free FAR)."""
    flagged = {k: 0 for k in (*MODELS, "ensemble")}
    total = 0
    for seg in segments:
        run = run_file(seg, sensor_idx, cfg, work)
        _clear_keras()
        test = run.test_slice(cfg.fit_rows)
        total += len(run.labels[test])
        for key in flagged:
            flagged[key] += int(run.decisions[key][test].sum())
        share = float(run.decisions["ensemble"][test].mean())
        progress(f"  normal segment {seg.name}: ensemble flags {share:.1%} of its test rows")
    return {
        "segments": [s.name for s in segments],
        "test_points": total,
        "far_percent": {k: 100.0 * v / total if total else None for k, v in flagged.items()},
    }


# --- the whole protocol -----------------------------------------------------------------------


def run_protocol(
    files: Sequence[SkabFile],
    cfg: ProtocolConfig,
    progress: Progress = print,
    models_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the protocol on every file with anomalies; return the JSON-ready result.

    Each file's model set goes to a temporary directory, or is kept under ``models_dir``.
    """
    from training.lstm_ae import set_tf_threads

    started = time.perf_counter()
    set_tf_threads(cfg.threads)
    experiments = [f for f in files if f.has_anomalies]
    skipped = [f.name for f in files if not f.has_anomalies]
    if not experiments:
        raise ValueError("no experiment file with anomalies found")
    short = [f.name for f in experiments if f.n_rows <= cfg.fit_rows]
    if short:
        raise ValueError(f"files with no rows after the first {cfg.fit_rows}: {short}")
    sensor_idx, drift = choose_sensors(experiments, cfg)
    used = [SENSOR_NAMES[i] for i in sensor_idx]
    progress(
        f"{len(experiments)} experiment files ({len(skipped)} without anomalies skipped: "
        f"{skipped}); sensors {used}; dropped {[s for s in SENSOR_NAMES if s not in used]} "
        f"(median level drift of the fit rows: "
        + ", ".join(f"{k} {v:.2f}" for k, v in drift.items())
        + ")"
    )
    runs: list[FileRun] = []
    per_file: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        work = models_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="skab-")))
        for i, data in enumerate(experiments, start=1):
            t0 = time.perf_counter()
            run = run_file(data, sensor_idx, cfg, work)
            _clear_keras()
            runs.append(run)
            m = pooled_metrics([run], cfg.fit_rows)
            row = {
                "file": data.name,
                "rows": data.n_rows,
                "test_points": data.n_rows - cfg.fit_rows,
                "anomalous_test_points": int(data.labels[cfg.fit_rows :].sum())
                if data.labels is not None
                else 0,
                **run.info,
                "metrics": {
                    k: {
                        x: v[x]
                        for x in (
                            "f1",
                            "far_percent",
                            "mar_percent",
                            "event_recall",
                            "mean_detection_delay_seconds",
                        )
                    }
                    for k, v in m.items()
                },
                "wall_seconds": time.perf_counter() - t0,
            }
            per_file.append(row)
            progress(
                f"[{time.perf_counter() - started:6.1f}s] {i:2d}/{len(experiments)} {data.name}: "
                + "  ".join(
                    f"{k} F1 {_fmt(v['f1'], '.2f')} FAR {_fmt(v['far_percent'], '.1f')}% "
                    f"MAR {_fmt(v['mar_percent'], '.1f')}%"
                    for k, v in m.items()
                )
                + f"  (LSTM {run.info['lstm_ae_epochs']} epochs, {row['wall_seconds']:.0f}s)"
            )
        normal: dict[str, Any] | None = None
        if cfg.normal_segments:
            test_rows = int(np.median([f.n_rows - cfg.fit_rows for f in experiments]))
            free = [f for f in files if f.labels is None or not f.labels.any()]
            segments = normal_segments(free, cfg.normal_segments, test_rows, cfg.fit_rows)
            progress(f"FAR check on {len(segments)} anomaly-free segments of {test_rows} test rows")
            normal = far_on_normal(segments, sensor_idx, cfg, work, progress)
    pooled = pooled_metrics(runs, cfg.fit_rows)
    return {
        "protocol": (
            "SKAB outlier detection: per file, fit on the first "
            f"{cfg.fit_rows} rows, predict the rest causally; metrics over all test rows pooled"
        ),
        "data": {
            "files": [f.name for f in experiments],
            "skipped_without_anomalies": skipped,
            "test_points": int(sum(f.n_rows - cfg.fit_rows for f in experiments)),
            "anomalous_test_points": sum(
                int(f.labels[cfg.fit_rows :].sum()) for f in experiments if f.labels is not None
            ),
        },
        "config": cfg.to_dict(),
        "sensors": {
            "used": used,
            "dropped": [s for s in SENSOR_NAMES if s not in used],
            "median_level_drift_of_fit_rows": drift,
            "rule": "explicit --sensors"
            if cfg.sensors is not None
            else f"drop sensors whose median level drift exceeds {cfg.drift_limit}",
        },
        "results": pooled,
        "leaderboard": LEADERBOARD,
        "targets": [
            common.target(f"SKAB ensemble {k}", pooled["ensemble"][k], op, limit).to_dict()
            for k, (op, limit) in TARGETS.items()
        ],
        "far_on_anomaly_free_segments": normal,
        "threshold_sensitivity": sensitivity(runs, cfg),
        "per_file": per_file,
        "run_seconds": time.perf_counter() - started,
    }


def _clear_keras() -> None:
    """Free the finished file's graphs: 16 models in one process otherwise pile up."""
    import keras

    keras.backend.clear_session()


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# --- command line -----------------------------------------------------------------------------


def _parse_smooth(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected K/N, e.g. 3/5, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _parse_weights(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in MODELS or not value:
            raise argparse.ArgumentTypeError(f"expected iforest=W,lstm_ae=W, got {text!r}")
        out[key.strip()] = float(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    d = ProtocolConfig()
    p = argparse.ArgumentParser(
        description="SKAB outlier-detection protocol with the project's models (ONNX, as the "
        "agent runs them).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="directory with SKAB CSV files "
        "(searched recursively; files without anomalies are skipped)",
    )
    p.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="results directory")
    p.add_argument("--fit-rows", type=int, default=d.fit_rows, help="rows each file is fit on")
    p.add_argument(
        "--validation-rows",
        type=int,
        default=d.validation_rows,
        help="last fit rows that stop LSTM training early",
    )
    p.add_argument(
        "--window",
        type=int,
        default=d.window,
        help="steps per window (both models judge step t from the window ending at t)",
    )
    p.add_argument(
        "--rolling",
        type=int,
        default=d.rolling,
        help="steps of the Isolation Forest's rolling features",
    )
    p.add_argument(
        "--sensors",
        default=None,
        help="comma-separated sensors to model (default: all within --drift-limit); "
        f"names: {','.join(SENSOR_NAMES)}; 'all' for every sensor",
    )
    p.add_argument(
        "--drift-limit",
        type=float,
        default=d.drift_limit,
        help="drop sensors whose median level shift between the two halves of the "
        "fit rows exceeds this many standard deviations",
    )
    p.add_argument(
        "--threshold-quantile",
        type=float,
        default=d.threshold_quantile,
        help="quantile of the reference scores a model's threshold sits at (1 = max)",
    )
    p.add_argument(
        "--threshold-source",
        choices=("fit", "validation"),
        default=d.threshold_source,
        help="reference scores: every fit-row window, or only the validation rows",
    )
    p.add_argument(
        "--smooth",
        type=_parse_smooth,
        default=f"{d.smooth_k}/{d.smooth_n}",
        metavar="K/N",
        help="flag a step when K of the last N decisions are anomalous",
    )
    p.add_argument("--trees", type=int, default=d.n_estimators, help="Isolation Forest trees")
    p.add_argument(
        "--max-samples", type=int, default=d.max_samples, help="Isolation Forest samples per tree"
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="LSTM epochs (upper bound)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="LSTM batch size")
    p.add_argument("--patience", type=int, default=d.patience, help="LSTM early-stop patience")
    p.add_argument("--voting", choices=("weighted", "majority"), default=d.voting.strategy)
    p.add_argument(
        "--weights",
        type=_parse_weights,
        default=d.voting.weights,
        help="voting weights, e.g. iforest=0.4,lstm_ae=0.6",
    )
    p.add_argument(
        "--vote-threshold",
        type=float,
        default=d.voting.threshold,
        help="weighted voting: share of weight that makes a step anomalous",
    )
    p.add_argument(
        "--normal-segments",
        type=int,
        default=d.normal_segments,
        metavar="N",
        help="also run the protocol on N anomaly-free pieces of the files without anomalies "
        "and report the share of their test rows flagged (a label-free FAR)",
    )
    p.add_argument(
        "--keep-models",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep each file's model set (ONNX + manifest) under DIR",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="TensorFlow threads")
    return p


def config_from_args(args: argparse.Namespace) -> ProtocolConfig:
    sensors: tuple[str, ...] | None = None
    if args.sensors:
        sensors = (
            SENSOR_NAMES
            if args.sensors.strip() == "all"
            else tuple(s.strip() for s in args.sensors.split(",") if s.strip())
        )
    return replace(
        ProtocolConfig(),
        fit_rows=args.fit_rows,
        validation_rows=args.validation_rows,
        window=args.window,
        rolling=args.rolling,
        sensors=sensors,
        drift_limit=args.drift_limit,
        threshold_quantile=args.threshold_quantile,
        threshold_source=args.threshold_source,
        smooth_k=args.smooth[0],
        smooth_n=args.smooth[1],
        n_estimators=args.trees,
        max_samples=args.max_samples,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=args.seed,
        threads=args.threads,
        normal_segments=args.normal_segments,
        voting=VotingEntry(
            strategy=args.voting, weights=args.weights, threshold=args.vote_threshold
        ),
    )


def print_summary(result: dict[str, Any]) -> None:
    rows: list[list[Any]] = []
    labels = {
        "iforest": "Isolation Forest (ours)",
        "lstm_ae": "LSTM-AE (ours)",
        "ensemble": "ensemble (ours)",
    }
    for key, label in labels.items():
        m = result["results"][key]
        rows.append(
            [
                label,
                m["f1"],
                m["far_percent"],
                m["mar_percent"],
                f"{m['events_detected']}/{m['events']}",
            ]
        )
    for name, m in LEADERBOARD.items():
        rows.append([f"{name} (leaderboard)", m["f1"], m["far_percent"], m["mar_percent"], "-"])
    d = result["data"]
    common.print_table(
        ["detector", "F1", "FAR %", "MAR %", "events"],
        rows,
        title=f"SKAB outlier detection: {len(d['files'])} files, {d['test_points']} test points "
        f"({d['anomalous_test_points']} anomalous); leaderboard is on all 34 files",
    )
    verdict = "; ".join(
        f"{t['figure'].split()[-1]} {t['value']:.3g} {t['target']}: "
        f"{'met' if t['met'] else 'MISSED'}"
        for t in result["targets"]
    )
    print(f"target (ensemble): {verdict}")
    print(f"run time {result['run_seconds']:.0f}s")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = find_skab_files(args.data)
    result = run_protocol(
        files, cfg, progress=lambda s: print(s, flush=True), models_dir=args.keep_models
    )
    result["data"]["dir"] = str(args.data)
    print_summary(result)
    path = common.write_result("skab", result, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
