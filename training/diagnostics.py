"""Cross-validation and importance for the training report (and the tracked run).

Why: thresholds placed on one stretch of time say nothing about whether the models judge
every stretch alike. Two questions:

* **Are the scores stable over time?** The pipeline already scores every fit window out of
  fold (:mod:`training.calibration`: time-ordered folds, each held out once while both
  models are refitted on the others, purged at the borders; for large data a hold-out
  tail, shown here in consecutive blocks). Per fold: the held-out scores and the share of
  them above the model's final threshold. Stable models give about ``100 * (1 -
  quantile)`` % in every fold; a fold far above says normal operation there looks unlike
  the rest (a regime the models would raise false alarms on). No model is refitted here.
* **What drives the scores?** Permutation importance of the Isolation Forest's features on
  the evaluated steps (drop in ROC AUC against the labels when a feature column is
  shuffled; mean absolute score change without labels), and each sensor's share of the LSTM
  autoencoder's reconstruction error on normal and on anomalous evaluated steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from .result import TrainResult

CV_FOLDS = 5  # blocks of a hold-out tail (k-fold calibration has its own folds)
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


def cross_validate(result: TrainResult, k: int = CV_FOLDS) -> dict[str, Any]:
    """Per fold of the out-of-fold calibration: score stability of both models."""
    cal = result.calibration
    folds = [np.isin(cal.steps, f) for f in result.calibration_folds]
    kind = result.plan_mode
    if kind == "holdout" or len(folds) < 2:
        folds = [np.isin(np.arange(len(cal)), b) for b in np.array_split(np.arange(len(cal)), k)]
    q = result.manifest.voting.quantile or 0.995
    out: dict[str, Any] = {"folds": len(folds), "mode": kind, "quantile": q}
    for key, entry in result.manifest.models.items():
        held = [cal.scores[key][m] for m in folds]
        exceed = [100.0 * float(np.mean(h > entry.threshold)) for h in held]
        q99 = [float(np.quantile(h, 0.99)) for h in held]
        out[key] = {
            "threshold": entry.threshold,
            "fold_exceed_percent": exceed,
            "fold_median": [float(np.median(h)) for h in held],
            "fold_q99": q99,
            "fold_held_out": [len(h) for h in held],
            "exceed_percent_mean": float(np.mean(exceed)),
            "exceed_percent_sd": float(np.std(exceed)),
            "expected_exceed_percent": 100.0 * (1.0 - q),
            "q99_relative_spread": float(np.std(q99) / max(abs(np.mean(q99)), 1e-12)),
            "held_out_scores": held,
        }
    return out


def _auc(labels: NDArray[np.int8], scores: NDArray[np.float64]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def iforest_permutation_importance(result: TrainResult) -> dict[str, Any]:
    """Per feature: how much worse the Isolation Forest gets when that column is shuffled
    (on the evaluated steps, else on the fit part's out-of-fold steps, without labels)."""
    from edge_agent.pipeline.features import compute_features
    from edge_agent.pipeline.windows import sliding_windows

    m = result.manifest
    scored = result.test if result.test is not None else result.calibration
    if len(scored) == 0:
        return {"skipped": "no scored steps"}
    source = result.test_data if result.test is not None else result.data
    idx = _subsample(np.arange(len(scored)), PERM_MAX_ROWS, 3)
    steps = scored.steps[idx]
    windows = sliding_windows(source.values, m.window)[steps - (m.window - 1)]
    x = compute_features(windows, m.feature_spec)
    labels = None if scored.labels is None else scored.labels[idx]
    if labels is not None and labels.min() == labels.max():
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
    test = result.test
    if test is None or test.per_sensor is None or len(test) == 0:
        return {}
    ps = test.per_sensor.astype(np.float64)
    groups: dict[str, NDArray[np.bool_]] = {"all": np.ones(len(test), bool)}
    if test.labels is not None:
        y = test.labels != 0
        c = np.concatenate(([0], np.cumsum(y)))
        i = np.arange(len(y))
        dirty = (c[i + 1] - c[np.maximum(i - result.manifest.window + 1, 0)]) > 0
        groups = {"normal": ~dirty, "anomalous": y}
    out = {}
    for name, mask in groups.items():
        if mask.any():
            mean = ps[mask].mean(axis=0)
            share = 100.0 * mean / max(float(mean.sum()), 1e-30)
            out[name] = dict(zip(result.manifest.sensor_names, map(float, share), strict=True))
    return out


# --- figures and the report section ---------------------------------------------------------


def plot_cv(cv: dict[str, Any], path: Path) -> None:
    from .figures import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
    for ax, key in zip(axes[0], ("iforest", "lstm_ae"), strict=True):
        s = cv[key]
        folds = np.arange(1, len(s["held_out_scores"]) + 1)
        ax.boxplot(s["held_out_scores"], positions=folds, showfliers=False)
        ax.axhline(s["threshold"], color="red", linestyle="--", label="threshold")
        for f, e in zip(folds, s["fold_exceed_percent"], strict=True):
            ax.annotate(f"{e:.1f}%", (f, s["threshold"]), fontsize=8,
                        textcoords="offset points", xytext=(0, 6), ha="center")  # fmt: skip
        if key == "lstm_ae":
            ax.set_yscale("log")
        ax.set_xlabel("held-out fold (time order)")
        ax.set_ylabel("score of normal steps")
        ax.set_title(f"{key}: out-of-fold scores; % above the threshold")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_importance(perm: dict[str, Any], shares: dict[str, dict[str, float]], path: Path) -> None:
    from .figures import pyplot

    plt = pyplot()
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
    lines = ["## Cross-validation (out-of-fold scores of the fit part, by fold)", ""]
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
                             f"{s['fold_exceed_percent'][f]:.2f}"])  # fmt: skip
        lines += [
            (
                f"{cv['folds']} time-ordered folds of the fit part; each held out once while "
                "both models were refitted on the others (borders purged), exactly as the "
                "thresholds were placed."
                if cv["mode"] == "kfold"
                else f"The hold-out tail of the fit part in {cv['folds']} consecutive blocks."
            )
            + " % above: share of the fold's out-of-fold scores above the final threshold.",
            "",
            _table(["model", "fold", "held-out", "median", "q99", "% above"], rows),
            "",
            *(
                f"{k}: {cv[k]['exceed_percent_mean']:.2f} ± {cv[k]['exceed_percent_sd']:.2f} % "
                f"of out-of-fold steps above the threshold (expected "
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
            f"Isolation Forest, permutation importance on {perm['rows']} evaluated rows "
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
