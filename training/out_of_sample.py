"""Stage 2 of :func:`training.pipeline.train`: the final models, and out-of-sample scores.

The final models are fitted on every fit window; every fit window is also scored *out of
sample*, by fold models that did not see it (k-fold) or by the final models on a held-out
tail (large data), as :func:`training.calibration.plan` decides. Those scores place the
thresholds. No labels are used: the fit part is taken as normal operation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.features import FeatureSpec, default_feature_spec

from . import calibration
from .clock import Clock
from .config import TrainConfig
from .data import DataError, Dataset, Split
from .fitting import FitSettings, FittedPair, SeriesView, fit_pair, native_scores
from .model_set import MODEL_KEYS


@dataclass
class Fitted:
    """The final native models, and the out-of-sample scores of the fit part."""

    spec: FeatureSpec
    final: FittedPair
    lstm_center: NDArray[np.float32]
    lstm_scale: NDArray[np.float32]
    plan: calibration.Plan
    #: Out-of-sample scores per model, for ``plan.scored`` (window-end steps of the fit part).
    oos: dict[str, NDArray[np.float64]]


def fit_settings(cfg: TrainConfig) -> FitSettings:
    """The training config's model options, as :func:`training.fitting.fit_pair` takes them."""
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


def fit_models(cfg: TrainConfig, data: Dataset, split: Split, clock: Clock) -> Fitted:
    """Final models on every fit window; out-of-sample scores of every fit window from fold
    models (k-fold) or of the hold-out tail (large data). No labels are used."""
    with clock.phase("imports", "importing scikit-learn and TensorFlow"):
        from . import lstm_ae as lstm_mod  # heavy imports only when training

    lstm_mod.set_tf_threads(cfg.threads)
    values = data.values[split.fit]
    spec = default_feature_spec(data.sensors, cfg.rolling)
    view = SeriesView(values, spec, cfg.window)
    center, scale = lstm_mod.fit_scaler(values[data.real(split.fit)])
    c = cfg.calibration
    assert split.fit.start in (0, None), "the fit part starts the series"
    ends = data.window_ends(cfg.window, split.fit)  # none touches a long gap
    try:
        plan = calibration.plan(
            len(values), cfg.window, c.folds, c.kfold_max_windows, c.holdout, ends=ends
        )
    except ValueError as exc:
        raise DataError(f"{data.source}: {exc}") from None
    fs = fit_settings(cfg)
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
    return Fitted(spec, final, center, scale, plan, oos)
