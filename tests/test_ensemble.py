"""Voting rules shared by training evaluation and the agent."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.pipeline.ensemble import vote
from edge_agent.pipeline.manifest import ModelEntry, VotingEntry


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


def test_calibrated_score_is_fused_normalised_margin() -> None:
    models = {
        "iforest": entry("iforest", 0.0, 0.1).model_copy(update={"score_center": -0.1}),
        "lstm_ae": entry("lstm_ae", 1.0, 0.5).model_copy(update={"score_center": 0.5}),
    }
    voting = VotingEntry(
        weights={"iforest": 0.5, "lstm_ae": 0.5}, fused_threshold=0.8, fusion="mean"
    )
    v = vote(SCORES, models, voting)
    z = 0.5 * (SCORES["iforest"] + 0.1) / 0.1 + 0.5 * (SCORES["lstm_ae"] - 0.5) / 0.5
    np.testing.assert_allclose(v.ensemble_score, z - 0.8)
    assert v.ensemble_decision.tolist() == (z >= 0.8).tolist()


def test_calibrated_ensemble_adds_up_mild_evidence_of_both_models() -> None:
    """Both models just under their own thresholds: neither alone is anomalous, together
    they are (and a model far over its threshold carries the other)."""
    models = {
        "iforest": entry("iforest", 1.0, 1.0),  # z = score, own threshold at z = 1
        "lstm_ae": entry("lstm_ae", 1.0, 1.0),
    }
    voting = VotingEntry(
        weights={"iforest": 0.5, "lstm_ae": 0.5}, fused_threshold=0.7, fusion="mean"
    )
    scores = {"iforest": np.array([0.9, 0.0, 0.2]), "lstm_ae": np.array([0.9, 3.0, 0.2])}
    v = vote(scores, models, voting)
    assert v.decisions["iforest"].tolist() == [False, False, False]
    assert v.decisions["lstm_ae"].tolist() == [False, True, False]
    assert v.ensemble_decision.tolist() == [True, True, False]


@settings(max_examples=300, deadline=None)
@given(
    strategy=st.sampled_from(["calibrated", "majority", "weighted"]),
    s1=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=20),
    w=st.floats(0.05, 1.0),
    cut=st.floats(0.05, 1.0),
    fused=st.floats(-3, 3),
)
def test_decision_is_score_at_least_zero_for_every_strategy(
    strategy: str, s1: list[float], w: float, cut: float, fused: float
) -> None:
    a = np.array(s1)
    scores = {"iforest": a, "lstm_ae": a[::-1] * 2}
    voting = VotingEntry(
        strategy=strategy,  # type: ignore[arg-type]
        weights={"iforest": w, "lstm_ae": 1 - w + 0.05},
        threshold=cut,
        fused_threshold=fused,
    )
    v = vote(scores, MODELS, voting)
    assert v.ensemble_decision.tolist() == (v.ensemble_score >= 0).tolist()


def test_zero_weights_and_empty_scores_are_errors() -> None:
    with pytest.raises(ValueError, match="sum to zero"):
        vote(SCORES, MODELS, VotingEntry(strategy="weighted", weights={"iforest": 0, "lstm_ae": 0}))
    with pytest.raises(ValueError, match="no scores"):
        vote({}, MODELS, VotingEntry(weights={}))
