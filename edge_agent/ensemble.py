"""Voting: turn per-model scores into per-model decisions, an ensemble decision and score.

Used by training's evaluation and by the agent, so both decide the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .manifest import ModelEntry, VotingEntry


@dataclass(frozen=True)
class Votes:
    """Decisions for a batch of steps: per-model bool arrays, ensemble bool and float arrays."""

    decisions: dict[str, NDArray[np.bool_]]
    ensemble_decision: NDArray[np.bool_]
    ensemble_score: NDArray[np.float64]


def vote(
    scores: Mapping[str, NDArray[np.floating]],
    models: Mapping[str, ModelEntry],
    voting: VotingEntry,
) -> Votes:
    """Combine scores (already sign-corrected: higher is more anomalous) of the same steps.

    The ensemble score is the weighted mean of each model's margin
    ``(score - threshold) / score_scale``: 0 is "on the threshold" for every model.
    """
    names = [n for n in models if n in scores]
    if not names:
        raise ValueError("no scores to vote on")
    decisions = {n: np.asarray(scores[n]) > models[n].threshold for n in names}
    if voting.strategy == "majority":
        weights = dict.fromkeys(names, 1.0)
    else:
        weights = {n: float(voting.weights.get(n, 0.0)) for n in names}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("voting weights of the scored models sum to zero")
    agree = sum(weights[n] * decisions[n].astype(np.float64) for n in names) / total
    # majority: strictly more than half; weighted: at least the configured share
    cut = 0.5 if voting.strategy == "majority" else voting.threshold - 1e-12
    ensemble = agree > cut if voting.strategy == "majority" else agree >= cut
    margin = (
        sum(
            weights[n]
            * (np.asarray(scores[n], dtype=np.float64) - models[n].threshold)
            / models[n].score_scale
            for n in names
        )
        / total
    )
    return Votes(decisions, np.asarray(ensemble, dtype=bool), np.asarray(margin, dtype=np.float64))
