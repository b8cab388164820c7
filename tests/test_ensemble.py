"""Voting rules shared by training evaluation and the agent."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.ensemble import vote
from edge_agent.manifest import ModelEntry, VotingEntry


def entry(kind: str, threshold: float, scale: float) -> ModelEntry:
    return ModelEntry(
        kind=kind,
        file=f"{kind}.onnx",
        sha256="0" * 64,
        input_name="x",
        input_kind="features" if kind == "iforest" else "window",
        input_shape=[None, 3],
        score_output="s",
        threshold=threshold,
        score_scale=scale,
    )


MODELS = {"iforest": entry("iforest", 0.0, 0.1), "lstm_ae": entry("lstm_ae", 1.0, 0.5)}
SCORES = {"iforest": np.array([-0.1, 0.05, -0.2, 0.3]), "lstm_ae": np.array([0.5, 0.8, 1.5, 2.0])}


def test_majority_of_two_needs_both() -> None:
    v = vote(SCORES, MODELS, VotingEntry(strategy="majority", weights={"iforest": 1, "lstm_ae": 1}))
    assert v.decisions["iforest"].tolist() == [False, True, False, True]
    assert v.decisions["lstm_ae"].tolist() == [False, False, True, True]
    assert v.ensemble_decision.tolist() == [False, False, False, True]


def test_weighted_vote_follows_the_heavier_model() -> None:
    voting = VotingEntry(
        strategy="weighted", weights={"iforest": 0.4, "lstm_ae": 0.6}, threshold=0.5
    )
    v = vote(SCORES, MODELS, voting)
    assert v.ensemble_decision.tolist() == [False, False, True, True]


def test_ensemble_score_is_weighted_mean_margin() -> None:
    voting = VotingEntry(strategy="weighted", weights={"iforest": 0.4, "lstm_ae": 0.6})
    v = vote(SCORES, MODELS, voting)
    expected = 0.4 * (SCORES["iforest"] - 0.0) / 0.1 + 0.6 * (SCORES["lstm_ae"] - 1.0) / 0.5
    np.testing.assert_allclose(v.ensemble_score, expected)


def test_zero_weights_and_empty_scores_are_errors() -> None:
    with pytest.raises(ValueError, match="sum to zero"):
        vote(SCORES, MODELS, VotingEntry(strategy="weighted", weights={"iforest": 0, "lstm_ae": 0}))
    with pytest.raises(ValueError, match="no scores"):
        vote({}, MODELS, VotingEntry(weights={}))
