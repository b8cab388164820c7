"""The training report's figures (PNG): score distributions with the thresholds, the LSTM's
training curves, per-sensor reconstruction error and the test part over time.

matplotlib is imported only when a figure is drawn (``pyplot``), so ``edge-train evaluate``
and the agent-side imports of training never pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .metrics import runs

if TYPE_CHECKING:
    from .evaluation import ScoredSteps

#: Sensors shown in the time-series figure (the first ones of the model's sensor list).
TIMESERIES_SENSORS = 4


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (imported only when a figure is drawn)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_score_distributions(
    scored: ScoredSteps,
    thresholds: dict[str, float],
    settling: NDArray[np.bool_] | None,
    path: Path,
) -> None:
    """Test-score histograms per model with the threshold.

    Labelled data is split three ways: normal, anomalous, and normal steps right after a
    fault (``settling``: the window still holds the fault, so high scores are expected).
    """
    plt = pyplot()
    keys = list(thresholds)
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
    groups: list[tuple[str, NDArray[np.bool_], str]] = []
    if scored.labels is None:
        groups.append(("all steps", np.ones(len(scored), dtype=bool), "tab:blue"))
    else:
        after = np.zeros(len(scored), dtype=bool) if settling is None else settling
        normal = (scored.labels == 0) & ~after
        groups.append(("normal", normal, "tab:blue"))
        if after.any():
            groups.append(("just after a fault", after & (scored.labels == 0), "tab:orange"))
        groups.append(("anomalous", scored.labels == 1, "tab:red"))
    for ax, key in zip(axes[0], keys, strict=True):
        s = scored.scores[key]
        finite = s[np.isfinite(s)]
        # heavy-tailed positive scores (reconstruction errors) read better on a log axis
        log_x = finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() > 20
        bins: NDArray[np.float64] | int = 10
        if log_x:
            bins = np.geomspace(finite.min(), finite.max(), 80)
            ax.set_xscale("log")
        elif finite.size:
            bins = np.histogram_bin_edges(finite, bins=80)
        for label, mask, color in groups:
            if mask.any():
                ax.hist(s[mask], bins=bins, alpha=0.55, label=label, color=color)
        ax.axvline(thresholds[key], color="black", linestyle="--", label="threshold")
        ax.set_yscale("log")
        ax.set_title(f"{key}: scores")
        ax.set_xlabel("score (higher = more anomalous)")
        ax.set_ylabel("steps")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training_curves(history: dict[str, list[float]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], marker="o", label="loss (train)")
    ax.plot(epochs, history["val_loss"], marker="o", label="val_loss")
    best = int(np.argmin(history["val_loss"]))
    ax.axvline(best + 1, color="grey", linestyle=":", label=f"best epoch {best + 1}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled units)")
    ax.set_title("LSTM autoencoder training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sensor_contributions(scored: ScoredSteps) -> dict[str, NDArray[np.float64]]:
    """Mean per-sensor reconstruction error over normal and over anomalous test steps."""
    if scored.per_sensor is None:
        return {}
    ps = scored.per_sensor.astype(np.float64)
    if scored.labels is None:
        return {"all": ps.mean(axis=0)}
    out = {}
    for name, mask in (("normal", scored.labels == 0), ("anomalous", scored.labels == 1)):
        if mask.any():
            out[name] = ps[mask].mean(axis=0)
    return out


def plot_sensor_contributions(
    contributions: dict[str, NDArray[np.float64]], sensors: list[str], path: Path
) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(sensors)), 4.5))
    x = np.arange(len(sensors))
    width = 0.8 / max(1, len(contributions))
    colors = {"normal": "tab:blue", "anomalous": "tab:red", "all": "tab:blue"}
    for i, (name, values) in enumerate(contributions.items()):
        ax.bar(x + i * width, values, width, label=f"{name} windows", color=colors.get(name))
    ax.set_xticks(x + width * (len(contributions) - 1) / 2)
    ax.set_xticklabels(sensors, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("mean squared error (scaled units)")
    ax.set_title("LSTM reconstruction error per sensor (test part)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_test_timeseries(
    scored: ScoredSteps,
    sensors: list[str],
    units: list[str],
    detections: NDArray[np.bool_],
    ensemble_score: NDArray[np.float64],
    path: Path,
) -> None:
    """A few sensors over the test part: labelled faults shaded, ensemble detections marked."""
    plt = pyplot()
    shown = list(range(min(TIMESERIES_SENSORS, len(sensors))))
    fig, axes = plt.subplots(
        len(shown) + 1, 1, figsize=(13, 2.0 * (len(shown) + 1)), sharex=True, squeeze=False
    )
    hours = (
        (scored.timestamps - scored.timestamps[0]) / 3600.0 if len(scored) else scored.timestamps
    )
    fault_spans = runs(scored.labels) if scored.labels is not None else []
    for ax_row, j in zip(axes[:-1], shown, strict=False):
        ax = ax_row[0]
        ax.plot(hours, scored.values[:, j], lw=0.6, color="tab:blue")
        ax.plot(hours[detections], scored.values[detections, j], ".", ms=2, color="tab:red")
        ax.set_ylabel(f"{sensors[j]}\n[{units[j]}]" if units[j] else sensors[j], fontsize=8)
    score_ax = axes[-1][0]
    score_ax.plot(hours, ensemble_score, lw=0.6, color="black")
    score_ax.axhline(0.0, color="grey", linestyle="--", lw=0.8)
    score_ax.set_ylabel("ensemble\nmargin", fontsize=8)
    score_ax.set_xlabel("hours since the start of the test part")
    for ax_row in axes:
        for start, stop in fault_spans:
            ax_row[0].axvspan(hours[start], hours[stop - 1], color="orange", alpha=0.25, lw=0)
    axes[0][0].set_title(
        "Test part: labelled faults shaded orange, ensemble detections red"
        if fault_spans
        else "Test part: ensemble detections red"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
