"""ModelSet (edge_agent/pipeline/scoring.py): the sessions a batch runs on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from handmade_models import build_model_set, normal_series

from edge_agent.pipeline.scoring import LARGE_BATCH, ModelSet

WINDOW = 10


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW)


def windows(n: int) -> np.ndarray:
    series = normal_series(n + WINDOW, seed=8).astype(np.float32)
    return np.stack([series[i : i + WINDOW] for i in range(n)])


def test_large_batches_run_on_the_multi_threaded_sessions_with_the_same_scores(
    model_dir: Path,
) -> None:
    plain = ModelSet.load(model_dir)
    threaded = ModelSet.load(model_dir, batch_threads=2)
    assert plain.batch_sessions == {} and set(threaded.batch_sessions) == set(threaded.sessions)
    ran: list[str] = []
    for key, sess in threaded.batch_sessions.items():
        real = sess.run

        def spy(names: list[str], feeds: dict[str, np.ndarray], real=real, key=key) -> list:
            ran.append(f"{key}:{len(next(iter(feeds.values())))}")
            return real(names, feeds)

        threaded.batch_sessions[key] = type("Spy", (), {"run": staticmethod(spy)})()
    big, small = windows(LARGE_BATCH), windows(LARGE_BATCH - 1)
    for w in (big, small):
        a, b = plain.score(w), threaded.score(w)
        for name in a.scores:
            np.testing.assert_allclose(a.scores[name], b.scores[name], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(a.votes.ensemble_decision, b.votes.ensemble_decision)
    assert sorted(ran) == sorted(f"{k}:{LARGE_BATCH}" for k in threaded.sessions)
