"""Cross-validation and importance for the training report (and the tracked run).

Why: one train/validation/test split says how the models did on one stretch of time. Two
questions it cannot answer:

* **Are the scores stable over time?** Time-ordered k-fold on the *normal* training data:
  the training part is cut into ``k`` consecutive blocks; each block is held out once while
  both models are refitted on the other blocks (minus a purge gap of one window/rolling
  length at each border, so no held-out step is inside a training window). Per fold: the
  held-out scores, a threshold at the configured quantile of the fold's own training
  scores, and the share of held-out normal steps above it. Stable models give about
  ``100 * (1 - quantile)`` % in every fold; a fold far above says normal operation there
  looks unlike the rest (a regime the models would raise false alarms on).
* **What drives the scores?** Permutation importance of the Isolation Forest's features on
  the test part (drop in ROC AUC against the labels when a feature column is shuffled; mean
  absolute score change without labels), and each sensor's share of the LSTM autoencoder's
  reconstruction error on normal and on anomalous test steps.

Cost bound (the LSTM must not be trained k times at full size): each fold's LSTM trains on
at most ``CV_MAX_WINDOWS`` windows for at most ``CV_MAX_EPOCHS`` epochs, so the whole CV is
at most ``CV_FOLDS * CV_MAX_EPOCHS * CV_MAX_WINDOWS`` = 15,000 window-passes whatever the
data size (the main fit: up to 20 epochs x 5,000 windows = 100,000). Held-out scoring and
the permutation rows are capped too. Native models (scikit-learn, Keras) score here; these
are diagnostics, the thresholds and metrics that count come from onnxruntime in the pipeline.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from .pipeline import TrainResult

CV_FOLDS = 5
CV_MAX_EPOCHS = 3
CV_MAX_WINDOWS = 1000  # LSTM training windows per fold
CV_MAX_HELD_OUT = 2000  # scored held-out rows/windows per fold
PERM_MAX_ROWS = 4000
PERM_REPEATS = 3
TOP_FEATURES = 15
FIGURES = {"cv": "cv_stability.png", "importance": "importance.png"}
JSON_NAME = "diagnostics.json"


def _subsample(idx: NDArray[np.int64], limit: int, seed: int) -> NDArray[np.int64]:
    if len(idx) <= limit:
        return idx
    rng = np.random.default_rng([seed, 13])
    return np.sort(rng.choice(idx, size=limit, replace=False))


def fold_bounds(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` consecutive [start, stop) blocks covering 0..n."""
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def fold_masks(
    n: int, k: int, purge: int, normal: NDArray[np.bool_]
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Per fold: (training indices, held-out indices), normal rows only, purged borders."""
    out = []
    pos = np.arange(n)
    for start, stop in fold_bounds(n, k):
        held = normal & (pos >= start) & (pos < stop)
        train = normal & ((pos < start - purge) | (pos >= stop + purge))
        out.append((np.flatnonzero(train), np.flatnonzero(held)))
    return out


def _fold_summary(
    train_scores: list[NDArray[np.float64]],
    held_scores: list[NDArray[np.float64]],
    quantile: float,
) -> dict[str, Any]:
    thresholds = [float(np.quantile(s, quantile)) for s in train_scores]
    exceed = [100.0 * float(np.mean(h > t)) for h, t in zip(held_scores, thresholds, strict=True)]
    q99 = [float(np.quantile(h, 0.99)) for h in held_scores]
    return {
        "fold_threshold": thresholds,
        "fold_exceed_percent": exceed,
        "fold_median": [float(np.median(h)) for h in held_scores],
        "fold_q99": q99,
        "fold_held_out": [len(h) for h in held_scores],
        "exceed_percent_mean": float(np.mean(exceed)),
        "exceed_percent_sd": float(np.std(exceed)),
        "expected_exceed_percent": 100.0 * (1.0 - quantile),
        "q99_relative_spread": float(np.std(q99) / max(abs(np.mean(q99)), 1e-12)),
    }


def cross_validate(result: TrainResult, k: int = CV_FOLDS) -> dict[str, Any]:
    """Time-ordered k-fold score stability of both models on normal training data."""
    from edge_agent.features import compute_series_features
    from edge_agent.windows import sliding_windows

    from . import iforest as iforest_mod
    from . import lstm_ae as lstm_mod
    from .pipeline import normal_windows

    m = result.manifest
    data = result.data
    values = data.values[result.split.train]
    labels = None if data.labels is None else data.labels[result.split.train]
    window, rolling = m.window, m.features.rolling
    if len(values) < k * 2 * window:
        return {"skipped": f"training part of {len(values)} steps < {k} folds x 2 windows"}
    out: dict[str, Any] = {
        "folds": k,
        "bound": {
            "lstm_max_epochs": CV_MAX_EPOCHS,
            "lstm_max_windows_per_fold": CV_MAX_WINDOWS,
            "max_held_out_per_fold": CV_MAX_HELD_OUT,
        },
    }

    ip = m.models["iforest"].params
    feats = compute_series_features(values, m.feature_spec)
    normal = np.ones(len(feats), bool) if labels is None else normal_windows(labels, rolling)
    train_s, held_s = [], []
    for f, (tr, ho) in enumerate(fold_masks(len(feats), k, rolling, normal)):
        forest = iforest_mod.fit_iforest(
            feats[tr],
            n_estimators=int(ip.get("n_estimators", 100)),
            max_samples=int(ip.get("max_samples", 256)),
            seed=int(ip.get("seed", 0)) + f,
        )
        ho = _subsample(ho, CV_MAX_HELD_OUT, f)
        tr_scored = _subsample(tr, CV_MAX_HELD_OUT * 4, f + 100)
        train_s.append(-forest.score_samples(feats[tr_scored]).astype(np.float64))
        held_s.append(-forest.score_samples(feats[ho]).astype(np.float64))
    out["iforest"] = _fold_summary(train_s, held_s, float(ip.get("threshold_quantile", 0.995)))
    out["iforest"]["held_out_scores"] = held_s

    lp = m.models["lstm_ae"].params
    scaler = m.scalers["lstm_ae"]
    center = np.asarray(scaler["center"], np.float32)
    scale = np.asarray(scaler["scale"], np.float32)
    windows = sliding_windows(values, window)
    normal = np.ones(len(windows), bool) if labels is None else normal_windows(labels, window)
    epochs = min(int(lp.get("epochs_max", CV_MAX_EPOCHS)), CV_MAX_EPOCHS)
    train_s, held_s = [], []
    for f, (tr, ho) in enumerate(fold_masks(len(windows), k, window, normal)):
        tr = _subsample(tr, CV_MAX_WINDOWS + CV_MAX_WINDOWS // 4, f)
        rng = np.random.default_rng([f, 17])
        is_val = np.zeros(len(tr), bool)
        is_val[rng.choice(len(tr), size=max(1, len(tr) // 5), replace=False)] = True
        model, _ = lstm_mod.fit_lstm_ae(
            np.ascontiguousarray(windows[tr[~is_val]]),
            np.ascontiguousarray(windows[tr[is_val]]),
            center,
            scale,
            epochs=epochs,
            batch_size=int(lp.get("batch_size", 64)),
            patience=int(lp.get("patience", 2)),
            seed=int(lp.get("seed", 0)) + f,
            max_train_windows=CV_MAX_WINDOWS,
            progress=lambda _msg: None,
        )
        ho = _subsample(ho, CV_MAX_HELD_OUT, f)
        train_s.append(lstm_mod.keras_errors(model, windows[tr[~is_val]])[0].astype(np.float64))
        held_s.append(lstm_mod.keras_errors(model, windows[ho])[0].astype(np.float64))
    out["lstm_ae"] = _fold_summary(train_s, held_s, float(lp.get("threshold_quantile", 0.995)))
    out["lstm_ae"]["held_out_scores"] = held_s
    out["lstm_ae"]["epochs"] = epochs
    return out


def _auc(labels: NDArray[np.int8], scores: NDArray[np.float64]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def iforest_permutation_importance(result: TrainResult) -> dict[str, Any]:
    """Per feature: how much worse the Isolation Forest gets when that column is shuffled."""
    from edge_agent.features import compute_series_features

    from .pipeline import context_anomalous

    m, data, test = result.manifest, result.data, result.test
    rolling = m.features.rolling
    if len(test) == 0:
        return {"skipped": "empty test part"}
    first = int(test.steps[0])
    feats = compute_series_features(
        data.values[first - rolling + 1 : int(test.steps[-1]) + 1], m.feature_spec
    )
    idx = _subsample(np.arange(len(feats)), PERM_MAX_ROWS, 3)
    x = feats[idx]
    labels = None
    if data.labels is not None:
        labels = context_anomalous(data.labels, test.steps[idx], rolling)
        if labels.min() == labels.max():
            labels = None
    base_scores = -result.iforest.score_samples(x).astype(np.float64)
    base = _auc(labels, base_scores) if labels is not None else 0.0
    rng = np.random.default_rng(11)
    importance: dict[str, float] = {}
    for j, name in enumerate(m.features.names):
        drops = []
        for _ in range(PERM_REPEATS):
            shuffled = x.copy()
            shuffled[:, j] = x[rng.permutation(len(x)), j]
            s = -result.iforest.score_samples(shuffled).astype(np.float64)
            drops.append(
                base - _auc(labels, s) if labels is not None else np.mean(np.abs(s - base_scores))
            )
        importance[name] = float(np.mean(drops))
    return {
        "metric": "ROC AUC drop" if labels is not None else "mean |score change|",
        "baseline_auc": base if labels is not None else None,
        "rows": len(x),
        "repeats": PERM_REPEATS,
        "features": dict(sorted(importance.items(), key=lambda kv: -kv[1])),
    }


def lstm_error_shares(result: TrainResult) -> dict[str, dict[str, float]]:
    """Each sensor's share (%) of the mean reconstruction error, normal vs anomalous steps."""
    from .pipeline import context_anomalous

    test = result.test
    if test.per_sensor is None or len(test) == 0:
        return {}
    ps = test.per_sensor.astype(np.float64)
    groups: dict[str, NDArray[np.bool_]] = {"all": np.ones(len(test), bool)}
    if result.data.labels is not None and test.labels is not None:
        dirty = context_anomalous(result.data.labels, test.steps, result.manifest.window) == 1
        groups = {"normal": ~dirty, "anomalous": test.labels == 1}
    out = {}
    for name, mask in groups.items():
        if mask.any():
            mean = ps[mask].mean(axis=0)
            share = 100.0 * mean / max(float(mean.sum()), 1e-30)
            out[name] = dict(zip(result.manifest.sensor_names, map(float, share), strict=True))
    return out


# --- figures and the report section ---------------------------------------------------------


def plot_cv(cv: dict[str, Any], path: Path) -> None:
    from .report import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
    for ax, key in zip(axes[0], ("iforest", "lstm_ae"), strict=True):
        s = cv[key]
        folds = np.arange(1, len(s["held_out_scores"]) + 1)
        ax.boxplot(s["held_out_scores"], positions=folds, showfliers=False)
        ax.plot(folds, s["fold_threshold"], "r_", ms=25, mew=2, label="fold threshold")
        for f, e in zip(folds, s["fold_exceed_percent"], strict=True):
            ax.annotate(f"{e:.1f}%", (f, s["fold_threshold"][f - 1]), fontsize=8,
                        textcoords="offset points", xytext=(0, 6), ha="center")  # fmt: skip
        if key == "lstm_ae":
            ax.set_yscale("log")
        ax.set_xlabel("held-out fold (time order)")
        ax.set_ylabel("score of normal steps")
        ax.set_title(f"{key}: held-out scores; % above the fold threshold")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_importance(perm: dict[str, Any], shares: dict[str, dict[str, float]], path: Path) -> None:
    from .report import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), squeeze=False)
    ax = axes[0][0]
    top = list(perm.get("features", {}).items())[:TOP_FEATURES][::-1]
    ax.barh([k for k, _ in top], [v for _, v in top], color="tab:green")
    ax.set_xlabel(perm.get("metric", ""))
    ax.set_title("Isolation Forest: permutation importance (test part)")
    ax.tick_params(axis="y", labelsize=7)
    ax = axes[0][1]
    if shares:
        sensors = list(next(iter(shares.values())))
        x = np.arange(len(sensors))
        width = 0.8 / len(shares)
        colors = {"normal": "tab:blue", "anomalous": "tab:red", "all": "tab:blue"}
        for i, (name, values) in enumerate(shares.items()):
            ax.bar(x + i * width, [values[s] for s in sensors], width, label=name,
                   color=colors.get(name))  # fmt: skip
        ax.set_xticks(x + width * (len(shares) - 1) / 2)
        ax.set_xticklabels(sensors, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("% of reconstruction error")
        ax.legend()
    ax.set_title("LSTM autoencoder: per-sensor share of the error (test part)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _table(header: list[str], rows: list[list[str]]) -> str:
    from .report import format_table

    return format_table(header, rows, markdown=True)


def diagnostics_section(result: TrainResult, report_dir: Path) -> list[str]:
    """Compute CV and importance, write their figures and ``diagnostics.json`` into
    ``report_dir`` and return the report's Markdown lines for them."""
    cv = cross_validate(result)
    perm = iforest_permutation_importance(result)
    shares = lstm_error_shares(result)
    lines = ["## Cross-validation (time-ordered k-fold on normal training data)", ""]
    if "skipped" in cv:
        lines += [f"Skipped: {cv['skipped']}.", ""]
    else:
        plot_cv(cv, report_dir / FIGURES["cv"])
        rows = []
        for key in ("iforest", "lstm_ae"):
            s = cv[key]
            for f in range(cv["folds"]):
                rows.append([key, str(f + 1), str(s["fold_held_out"][f]),
                             f"{s['fold_median'][f]:.4g}", f"{s['fold_q99'][f]:.4g}",
                             f"{s['fold_threshold'][f]:.4g}",
                             f"{s['fold_exceed_percent'][f]:.2f}"])  # fmt: skip
        lines += [
            f"{cv['folds']} consecutive folds of the training part's normal steps; each held "
            "out once, both models refitted on the others (borders purged by one window). "
            f"The LSTM is refitted with at most {CV_MAX_EPOCHS} epochs on at most "
            f"{CV_MAX_WINDOWS} windows per fold (a bound, not the main fit's settings).",
            "",
            _table(
                ["model", "fold", "held-out", "median", "q99", "fold threshold", "% above"], rows
            ),
            "",
            *(
                f"{k}: {cv[k]['exceed_percent_mean']:.2f} ± {cv[k]['exceed_percent_sd']:.2f} % "
                f"of held-out normal steps above the fold threshold (expected "
                f"{cv[k]['expected_exceed_percent']:.2f} %); q99 spread across folds "
                f"{100 * cv[k]['q99_relative_spread']:.1f} %."
                for k in ("iforest", "lstm_ae")
            ),
            "",
            f"![Cross-validation score stability]({FIGURES['cv']})",
            "",
        ]
    lines += ["## Feature importance", ""]
    if "features" in perm:
        top = list(perm["features"].items())[:10]
        lines += [
            f"Isolation Forest, permutation importance on {perm['rows']} test rows "
            f"({perm['repeats']} shuffles each; {perm['metric']}"
            + (f", baseline AUC {perm['baseline_auc']:.3f}" if perm["baseline_auc"] else "")
            + "):",
            "",
            _table(["feature", perm["metric"]], [[k, f"{v:.4f}"] for k, v in top]),
            "",
        ]
    if shares:
        groups = list(shares)
        lines += [
            "LSTM autoencoder, share of the reconstruction error per sensor (%):",
            "",
            _table(
                ["sensor", *groups],
                [[s, *(f"{shares[g][s]:.1f}" for g in groups)] for s in shares[groups[0]]],
            ),
            "",
        ]
    plot_importance(perm, shares, report_dir / FIGURES["importance"])
    lines += [f"![Feature importance]({FIGURES['importance']})", ""]
    summary = {
        "cv": _without_scores(cv),
        "importance": {"iforest": perm, "lstm_ae_error_share_percent": shares},
    }
    (report_dir / JSON_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return lines


def _without_scores(cv: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (
            {kk: vv for kk, vv in v.items() if kk != "held_out_scores"}
            if isinstance(v, dict)
            else v
        )
        for k, v in cv.items()
    }
