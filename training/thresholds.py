"""Decision thresholds and score scales from validation scores.

A threshold is a high quantile of the scores of *normal* validation points: it fixes the
false-alarm rate we accept on data like the validation part, whatever the model's score
units. ``score_scale`` puts models with different units on one footing for the ensemble
margin ``(score - threshold) / score_scale``.

``labels`` means "not normal" per score (0 = normal). For windowed models the caller marks
every step whose window touches an anomaly (``training.pipeline.context_anomalous``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Default share of normal validation points that must fall below the threshold.
DEFAULT_QUANTILE = 0.995
#: Smallest score scale written to a manifest (it must be > 0 and divides the margin).
MIN_SCORE_SCALE = 1e-6


def normal_scores(
    scores: NDArray[np.floating[Any]], labels: NDArray[np.integer[Any]] | None = None
) -> NDArray[np.float64]:
    """The scores of normal points (all of them when there are no labels), finite only."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if y.shape != s.shape:
            raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
        s = s[y == 0]
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no normal validation scores to set a threshold from")
    return s


def quantile_threshold(
    scores: NDArray[np.floating[Any]],
    quantile: float = DEFAULT_QUANTILE,
    labels: NDArray[np.integer[Any]] | None = None,
) -> float:
    """The ``quantile`` of normal validation scores; a score above it is anomalous."""
    if not 0 < quantile < 1:
        raise ValueError(f"threshold quantile must be between 0 and 1, got {quantile}")
    return float(np.quantile(normal_scores(scores, labels), quantile))


def score_scale(
    scores: NDArray[np.floating[Any]],
    labels: NDArray[np.integer[Any]] | None = None,
    floor: float = MIN_SCORE_SCALE,
) -> float:
    """Robust spread of normal validation scores: 99th percentile minus median, floored.

    Robust (not the standard deviation) so a few unlabelled anomalies in the validation
    part barely move it.
    """
    s = normal_scores(scores, labels)
    q99, median = np.quantile(s, [0.99, 0.5])
    return max(float(q99 - median), floor)
