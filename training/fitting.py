"""Fit both models on a chosen set of windows, and score windows with the native models.

One function fits the final models and every fold model of :mod:`training.calibration`,
so a fold model is trained exactly like the model it stands in for. Windows are named by
the step they end at (the step they judge) in the fit part's ``values``.

* Isolation Forest: on the feature rows of those steps (features of the ``rolling`` steps
  ending there, :mod:`edge_agent.pipeline.features`).
* LSTM autoencoder: on those windows, the last ``early_stopping_tail`` share of them (in
  time) held back for early stopping and learning-rate reduction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.features import FeatureSpec, compute_series_features
from edge_agent.pipeline.windows import sliding_windows

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FitSettings:
    window: int
    n_estimators: int
    max_samples: int
    contamination: float | str
    epochs: int
    batch_size: int
    patience: int
    max_train_windows: int | None
    early_stopping_tail: float
    seed: int
    threads: int


@dataclass
class FittedPair:
    forest: Any  # sklearn Pipeline (RobustScaler + IsolationForest)
    scoring_model: Any  # keras Model: raw window -> window_error, sensor_error
    history: dict[str, list[float]]
    iforest_rows: int
    lstm_windows: int


class SeriesView:
    """Feature rows and windows of one series, indexed by the step they end at."""

    def __init__(self, values: NDArray[np.floating[Any]], spec: FeatureSpec, window: int) -> None:
        self.values = np.asarray(values, dtype=np.float32)
        self.spec = spec
        self.window = window
        self._features = compute_series_features(self.values, spec)  # row i = step i+rolling-1
        self._windows = sliding_windows(self.values, window)  # row i = step i+window-1

    def features(self, ends: NDArray[np.int64]) -> NDArray[np.float32]:
        return np.ascontiguousarray(self._features[ends - (self.spec.rolling - 1)])

    def windows(self, ends: NDArray[np.int64]) -> NDArray[np.float32]:
        return np.ascontiguousarray(self._windows[ends - (self.window - 1)], dtype=np.float32)


def _subset(ends: NDArray[np.int64], limit: int | None, seed: int) -> NDArray[np.int64]:
    """A seeded sorted subset of at most ``limit`` window ends (bounds the LSTM's time)."""
    if limit is None or len(ends) <= limit:
        return ends
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(ends, size=limit, replace=False))


def fit_pair(
    view: SeriesView,
    ends: NDArray[np.int64],
    center: NDArray[np.float32],
    scale: NDArray[np.float32],
    cfg: FitSettings,
    progress: Progress,
) -> FittedPair:
    """Both models on the windows ending at ``ends`` (sorted)."""
    from . import iforest as iforest_mod  # heavy imports only when training
    from . import lstm_ae as lstm_mod

    forest = iforest_mod.fit_iforest(
        view.features(ends),
        n_estimators=cfg.n_estimators,
        max_samples=min(cfg.max_samples, len(ends)),
        contamination=cfg.contamination,
        seed=cfg.seed,
        n_jobs=cfg.threads,
    )
    n_tail = max(1, round(len(ends) * cfg.early_stopping_tail))
    fit_ends, tail_ends = ends[:-n_tail], ends[-n_tail:]
    if len(fit_ends) == 0:
        raise ValueError(f"{len(ends)} windows are too few to train the LSTM autoencoder")
    fit_ends = _subset(fit_ends, cfg.max_train_windows, cfg.seed)
    tail_ends = _subset(
        tail_ends,
        None if cfg.max_train_windows is None else max(1, cfg.max_train_windows // 4),
        cfg.seed + 1,
    )
    scoring_model, history = lstm_mod.fit_lstm_ae(
        view.windows(fit_ends),
        view.windows(tail_ends),
        center,
        scale,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        patience=cfg.patience,
        seed=cfg.seed,
        max_train_windows=None,
        progress=progress,
    )
    return FittedPair(forest, scoring_model, history, len(ends), len(fit_ends))


def native_scores(
    pair: FittedPair, view: SeriesView, ends: NDArray[np.int64]
) -> dict[str, NDArray[np.float64]]:
    """Sign-corrected scores (higher = more anomalous) of the windows ending at ``ends``,
    from the native models (ONNX parity with them is tested to 1e-4)."""
    from . import lstm_ae as lstm_mod

    forest_score = -pair.forest.decision_function(view.features(ends))
    errors, _ = lstm_mod.keras_errors(pair.scoring_model, view.windows(ends))
    return {
        "iforest": np.asarray(forest_score, dtype=np.float64),
        "lstm_ae": np.asarray(errors, dtype=np.float64),
    }
