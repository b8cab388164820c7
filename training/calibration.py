"""Label-free calibration: every fit row is used to fit *and* to place thresholds.

A threshold placed on the scores of the data a model was fitted on is too low (the model
has seen those windows), and a chronological 60/20/20 split wastes most of a small export
(a 400-row file would fit on 240 rows and put a 99.5 % quantile on ~50 windows). So:

* **k-fold** (small data, the common historian export): the fit part is cut into ``folds``
  time-ordered blocks; for each block, both models are refitted exactly like the final
  models on the other blocks — minus the windows that overlap the block (purged, so no
  test window shares a step with a training window) — and score the block. Every fit
  window then has an *out-of-fold* score from a model that never saw it. The final
  models are fitted on all of it.
* **hold-out** (very large data, above ``kfold_max_windows``, or asked for): the models are
  fitted on the first part and the last ``holdout`` share is scored out of sample. k-fold
  costs about ``folds + 1`` fits whatever the export's length (each fit draws a bounded
  sample), and it is the better estimate: a hold-out judges the thresholds by the fit's last
  stretch alone, so a load the plant ran at earlier but not then sets no threshold (measured
  on a generated 3-day export: 11 % of a healthy day's steps flagged with a hold-out, 0.2 %
  with k-fold; ``benchmarks/historian_plant.py``).

Thresholds come from these out-of-sample scores only, never from labels: per model a
quantile (its own decision), a median and a scale (the normalisation the calibrated
ensemble fuses, see :mod:`edge_agent.pipeline.ensemble`), and the fused score's quantile — the one
ensemble threshold. ``quantile`` is the stated point false-alarm rate on normal data:
0.995 means 0.5 % of normal steps score above it.

An operator does not see points, though, but alarms (``on_delay`` anomalous steps in a
row). For a plant, a stated *alarm* rate (``alarms_per_day`` per unit on normal operation)
is what matters, and it may need a higher ensemble threshold than the point rate:
:func:`alarm_threshold` raises it (never lowers it) to the level at which the out-of-sample
data would have raised no alarm at all, plus the margin the score's exponential tail says is
needed to stay quiet for ``1 / alarms_per_day`` days rather than for the hours the
out-of-sample data cover (a peaks-over-threshold extrapolation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.ensemble import fused_score
from edge_agent.pipeline.manifest import ModelEntry

#: Smallest score scale written to a manifest (it must be > 0 and divides the margin).
MIN_SCORE_SCALE = 1e-9
#: The alarm margin's tail scale is the mean excess over the held levels' top ``TAIL_SHARE``,
#: and over at least ``MIN_TAIL_POINTS`` of them (at most the upper half): a mean of the top
#: 1 % of a 400-row export is 4 points — on a quantised transmitter often all one value, a
#: scale of 0 and no margin at all. 50 exceedances is the usual floor for a peaks-over-threshold
#: estimate; where the data are that short, the margin comes from further down the tail
#: (larger, the cautious side while little is known).
TAIL_SHARE = 0.01
MIN_TAIL_POINTS = 50


@dataclass(frozen=True)
class Fold:
    """Fit on the window ends in ``train`` (sorted step indices), score those in ``held_out``."""

    train: NDArray[np.int64]
    held_out: NDArray[np.int64]


@dataclass(frozen=True)
class Plan:
    mode: Literal["kfold", "holdout"]
    #: Window-end steps the final models are fitted on.
    final_train: NDArray[np.int64]
    folds: list[Fold]

    @property
    def scored(self) -> NDArray[np.int64]:
        """Every window end that gets an out-of-sample score, in time order."""
        return np.sort(np.concatenate([f.held_out for f in self.folds]))


def purged(ends: NDArray[np.int64], lo: int, hi: int, window: int) -> NDArray[np.int64]:
    """Window ends whose window shares no step with any window ending in [lo, hi).

    A window ending at t covers t - window + 1 .. t; the held-out windows cover
    lo - window + 1 .. hi - 1, so a training window must end before lo - window + 1 or
    start at hi or later.
    """
    keep = (ends < lo - window + 1) | (ends - window + 1 >= hi)
    return ends[keep]


def plan(
    n_steps: int,
    window: int,
    folds: int,
    kfold_max_windows: int,
    holdout: float,
    ends: NDArray[np.int64] | None = None,
) -> Plan:
    """Which windows fit which models, for ``n_steps`` fit steps: the windows ending at
    ``ends`` (sorted; default every full window, window-1 ..; fewer when long gaps are left
    out, see :meth:`training.data.Dataset.window_ends`)."""
    if ends is None:
        ends = np.arange(window - 1, n_steps, dtype=np.int64)
    if len(ends) < 2 * folds:
        raise ValueError(f"{n_steps} steps leave {len(ends)} windows of {window}: too few")
    if len(ends) <= kfold_max_windows:
        blocks = np.array_split(ends, folds)
        out = []
        for block in blocks:
            lo, hi = int(block[0]), int(block[-1]) + 1
            train = purged(ends, lo, hi, window)
            if len(train) == 0:
                raise ValueError(
                    f"{n_steps} steps are too few for {folds} folds of window {window}"
                )
            out.append(Fold(train, block))
        return Plan("kfold", ends, out)
    cut = round(len(ends) * (1 - holdout))
    held = ends[cut:]
    train = purged(ends[:cut], int(held[0]), int(held[-1]) + 1, window)
    return Plan("holdout", train, [Fold(train, held)])


@dataclass(frozen=True)
class Calibration:
    """What the out-of-sample scores say about each model and the fused score."""

    quantile: float
    thresholds: dict[str, float]
    centers: dict[str, float]
    scales: dict[str, float]
    fused_threshold: float
    #: Out-of-sample scores per model (aligned with ``steps``) and their fused score.
    steps: NDArray[np.int64]
    scores: dict[str, NDArray[np.float64]]
    fused: NDArray[np.float64]

    def apply(self, entries: Mapping[str, ModelEntry]) -> dict[str, ModelEntry]:
        return {
            k: e.model_copy(
                update={
                    "threshold": self.thresholds[k],
                    "score_center": self.centers[k],
                    "score_scale": self.scales[k],
                }
            )
            for k, e in entries.items()
        }

    def summary(self) -> dict[str, Any]:
        return {
            "quantile": self.quantile,
            "out_of_sample_steps": len(self.steps),
            "fused_threshold": self.fused_threshold,
            **{
                k: {
                    "threshold": self.thresholds[k],
                    "center": self.centers[k],
                    "scale": self.scales[k],
                }
                for k in self.thresholds
            },
        }


def calibrate(
    steps: NDArray[np.int64],
    scores: Mapping[str, NDArray[np.floating[Any]]],
    entries: Mapping[str, ModelEntry],
    weights: Mapping[str, float],
    quantile: float,
    fusion: str = "max",
) -> Calibration:
    """Per-model threshold, center and scale, then the fused threshold, from out-of-sample
    scores of normal operation (no labels: the fit data is taken as normal)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
    clean = {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}
    thresholds, centers, scales = {}, {}, {}
    for key, s in clean.items():
        finite = s[np.isfinite(s)]
        if finite.size == 0:
            raise ValueError(f"{key}: no finite out-of-sample scores to calibrate on")
        th, med = (float(v) for v in np.quantile(finite, [quantile, 0.5]))
        thresholds[key], centers[key] = th, med
        scales[key] = max(th - med, MIN_SCORE_SCALE * max(1.0, abs(med)))
    normalised = {
        k: e.model_copy(update={"score_center": centers[k], "score_scale": scales[k]})
        for k, e in entries.items()
        if k in clean
    }
    fused = fused_score(clean, normalised, weights, fusion)
    fused_threshold = float(np.quantile(fused[np.isfinite(fused)], quantile))
    return Calibration(quantile, thresholds, centers, scales, fused_threshold, steps, clean, fused)


def alarm_threshold(
    fused: NDArray[np.float64],
    point_threshold: float,
    on_delay: int,
    covered_days: float,
    alarms_per_day: float,
) -> tuple[float, dict[str, float]]:
    """The fused threshold at which normal operation raises about ``alarms_per_day`` alarms.

    * ``quiet``: the highest level the out-of-sample fused score held for ``on_delay``
      consecutive steps — just above it, those data raise no alarm;
    * ``beta``: the mean excess of that held level over its 99th percentile (the scale of
      an exponential tail of what raises alarms: each ``beta`` higher, e times rarer) — or
      over a lower percentile, so that at least ``MIN_TAIL_POINTS`` levels exceed it;
    * threshold = max(point threshold, quiet + beta * ln(target days / covered days)).
    """
    f = np.asarray(fused, dtype=np.float64)
    f = f[np.isfinite(f)]
    if len(f) < on_delay or covered_days <= 0 or alarms_per_day <= 0:
        raise ValueError("alarm calibration needs out-of-sample scores and positive rates")
    held = np.lib.stride_tricks.sliding_window_view(f, on_delay).min(axis=1)
    quiet = float(held.max())
    k = min(max(int(np.ceil(TAIL_SHARE * len(held))), MIN_TAIL_POINTS), len(held) // 2)
    u = float(np.partition(held, len(held) - k - 1)[len(held) - k - 1])  # k levels above it
    excess = held[held > u] - u
    beta = float(excess.mean()) if excess.size else 0.0
    horizon = 1.0 / alarms_per_day
    margin = beta * np.log(max(1.0, horizon / covered_days))
    threshold = max(point_threshold, quiet + margin)
    return threshold, {
        "alarms_per_day": alarms_per_day,
        "covered_days": covered_days,
        "quiet_level": quiet,
        "tail_scale": beta,
        "tail_points": int(excess.size),
        "margin": float(margin),
        "point_threshold": point_threshold,
        "threshold": threshold,
    }
