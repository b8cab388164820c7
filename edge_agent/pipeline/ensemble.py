"""The ensemble: per-model scores in, per-model decisions and one ensemble decision and
score out — the same code in training's evaluation and in the agent.

``calibrated`` (the default) fuses the models into one score, with one threshold:

* each model's score is normalised on normal data (out-of-fold scores at training time):
  ``z = (score - score_center) / score_scale``, where ``score_center`` is the median and
  ``score_scale`` the distance from the median to the model's own threshold, so ``z = 1``
  is "as unusual as that model's calibrated tail" whatever the model's units;
* the fused score is, by ``fusion``, the largest ``z`` (``max``, the default) or their
  weighted mean (``mean``); ``fused_threshold`` is its quantile on normal data at the
  stated false-alarm rate;
* the ensemble score is ``fused - fused_threshold``: **score >= 0 exactly when the step is
  anomalous**.

Why ``max`` by default: the two models have complementary blind spots (the autoencoder
sees level and shape changes of a window, the forest the step's short-term statistics), so
a fault one of them does not see would be diluted by a mean. The maximum is a calibrated
"either": each model keeps its own detections at a slightly stricter threshold, and the
joint false-alarm rate on normal data is still the stated one. ``mean`` adds up two models
that are both mildly surprised, at the price of that dilution.

``weighted`` and ``majority`` voting stay as options; their ensemble score is the vote's
margin (share of weight that says anomalous minus the share needed), so score and decision
agree there too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.manifest import ModelEntry, VotingEntry


@dataclass(frozen=True)
class Votes:
    """Decisions for a batch of steps: per-model bool arrays, ensemble bool and float arrays."""

    decisions: dict[str, NDArray[np.bool_]]
    ensemble_decision: NDArray[np.bool_]
    ensemble_score: NDArray[np.float64]
    #: How far past the threshold, in units of the models' normal tails: the calibrated
    #: score itself, or for votes the weighted mean of ``(score - threshold) / score_scale``.
    #: Sets an anomaly alert's severity.
    strength: NDArray[np.float64]


def normalised(score: NDArray[np.floating], model: ModelEntry) -> NDArray[np.float64]:
    """A model's score in units of its normal tail (see the module docstring)."""
    return (np.asarray(score, dtype=np.float64) - model.score_center) / model.score_scale


def fused_score(
    scores: Mapping[str, NDArray[np.floating]],
    models: Mapping[str, ModelEntry],
    weights: Mapping[str, float],
    fusion: str = "max",
) -> NDArray[np.float64]:
    """The normalised scores of the models in ``scores`` (weight > 0) fused into one:
    their maximum, or their weighted mean."""
    names = [n for n in models if n in scores]
    w = {n: float(weights.get(n, 0.0)) for n in names}
    total = sum(w.values())
    if not names or total <= 0:
        raise ValueError("voting weights of the scored models sum to zero")
    if fusion == "max":
        z = [normalised(scores[n], models[n]) for n in names if w[n] > 0]
        return np.asarray(np.maximum.reduce(z), dtype=np.float64)
    return np.asarray(sum(w[n] * normalised(scores[n], models[n]) for n in names) / total)


def vote(
    scores: Mapping[str, NDArray[np.floating]],
    models: Mapping[str, ModelEntry],
    voting: VotingEntry,
) -> Votes:
    """Combine scores (already sign-corrected: higher is more anomalous) of the same steps."""
    names = [n for n in models if n in scores]
    if not names:
        raise ValueError("no scores to vote on")
    decisions = {n: np.asarray(scores[n]) > models[n].threshold for n in names}
    if voting.strategy == "calibrated":
        fused = fused_score(scores, models, voting.weights, voting.fusion)
        margin = fused - voting.fused_threshold
        return Votes(decisions, margin >= 0, margin, margin)
    weights = dict.fromkeys(names, 1.0) if voting.strategy == "majority" else voting.weights
    total_w = sum(float(weights.get(n, 0.0)) for n in names) or 1.0
    strength = np.asarray(
        sum(
            float(weights.get(n, 0.0))
            * (np.asarray(scores[n], dtype=np.float64) - models[n].threshold)
            / models[n].score_scale
            for n in names
        )
        / total_w,
        dtype=np.float64,
    )
    if voting.strategy == "majority":
        # anomalous when more than half say so: count >= n // 2 + 1
        count = sum(d.astype(np.int64) for d in decisions.values())
        margin = (np.asarray(count, dtype=np.float64) - (len(names) // 2 + 1)) / len(names)
    else:
        weights = {n: float(voting.weights.get(n, 0.0)) for n in names}
        total = sum(weights.values())
        if total <= 0:
            raise ValueError("voting weights of the scored models sum to zero")
        agree = sum(weights[n] * decisions[n].astype(np.float64) for n in names) / total
        margin = np.asarray(agree, dtype=np.float64) - voting.threshold + 1e-12
    margin = np.asarray(margin, dtype=np.float64)
    return Votes(decisions, margin >= 0, margin, strength)
