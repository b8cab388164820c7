"""ModelSet (edge_agent/pipeline/scoring.py) and how a batch is cut into parts for threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from handmade_models import build_model_set, normal_series

from edge_agent.pipeline.outcome import (
    MAX_SCORE_BATCH,
    MIN_PARALLEL_WINDOWS,
    ScoreJob,
    batch_slices,
    run_models,
)
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.sensor_health import SensorHealth

WINDOW = 10


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW)


def windows(n: int) -> np.ndarray:
    series = normal_series(n + WINDOW, seed=8).astype(np.float32)
    return np.stack([series[i : i + WINDOW] for i in range(n)])


def test_batch_slices_cover_the_batch_in_bounded_parts_a_multiple_of_the_threads() -> None:
    for parallel in (1, 2, 3, 4):
        for n in range(0, 700):
            parts = batch_slices(n, parallel)
            assert [i for a, b in parts for i in range(a, b)] == list(range(n))
            sizes = [b - a for a, b in parts]
            assert all(1 <= k <= MAX_SCORE_BATCH for k in sizes)
            assert not sizes or max(sizes) - min(sizes) <= 1  # near-equal
            p = min(parallel, n // MIN_PARALLEL_WINDOWS)
            if p > 1:
                assert len(parts) % p == 0 and min(sizes) >= MIN_PARALLEL_WINDOWS
            else:
                assert len(parts) == -(-n // MAX_SCORE_BATCH)
    assert [b - a for a, b in batch_slices(125, 2)] == [31, 31, 31, 32]
    assert [b - a for a, b in batch_slices(300, 2)] == [30] * 10
    assert [b - a for a, b in batch_slices(40, 2)] == [20, 20]
    assert batch_slices(31, 2) == [(0, 31)]  # two parts of 15 would not pay


def test_a_batch_scores_the_same_however_it_is_cut(model_dir: Path) -> None:
    """The parts threads score give exactly (bit for bit) the scores of one batch: each
    window is scored on its own rows, so replay (one thread) equals live (several)."""
    ms = ModelSet.load(model_dir, batch_threads=3)
    w = windows(150)
    whole = ms.score(w)
    for parallel in (1, 2, 3):
        ms.parallel = parallel
        cuts: list[int] = []

        def map_parts(score, parts, cuts=cuts):  # type: ignore[no-untyped-def]
            cuts.extend(len(p) for p in parts)
            return [score(p) for p in reversed(parts)][::-1]  # out of order, results in order

        health = SensorHealth(ms.manifest.sensors, rolling=10)
        job = ScoreJob(0.0, [], [], list(range(150)), w, ms, health)
        run_models(job, map_parts)
        assert cuts == [b - a for a, b in batch_slices(150, parallel)]
        assert len(cuts) == {1: 5, 2: 6, 3: 6}[parallel]
        for key in whole.scores:
            together = np.concatenate([b.scores[key] for b in job.scored])
            np.testing.assert_array_equal(together, whole.scores[key])
        np.testing.assert_array_equal(
            np.concatenate([b.votes.ensemble_decision for b in job.scored]),
            whole.votes.ensemble_decision,
        )


def test_batch_threads_0_uses_the_cpus_the_process_may_run_on(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.config import AgentSettings
    from edge_agent.model_loading import AUTO_BATCH_THREADS_MAX, load_model_set

    settings = AgentSettings(units=[{"name": "u1"}], models={"dir": str(model_dir)})
    assert settings.models.batch_threads == 0  # the default
    for cpus, expected in ((1, 1), (2, 2), (16, AUTO_BATCH_THREADS_MAX)):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid, n=cpus: set(range(n)))
        assert load_model_set(settings, None).parallel == expected
    pinned = settings.model_copy(
        update={"models": settings.models.model_copy(update={"batch_threads": 3})}
    )
    assert load_model_set(pinned, None).parallel == 3


def test_the_arena_keeps_buffers_not_results(model_dir: Path) -> None:
    """onnxruntime's arena (the default) reuses buffers between calls: scores of a batch
    scored after others of other sizes equal, bit for bit, those of a fresh arena-less set."""
    with_arena, without = ModelSet.load(model_dir), ModelSet.load(model_dir, mem_arena=False)
    w = windows(70)
    for n in (MAX_SCORE_BATCH, 3, MAX_SCORE_BATCH - 1):  # fill the arena with other shapes
        with_arena.score(windows(n + 5)[5:])
    a, b = with_arena.score(w[:MAX_SCORE_BATCH]), without.score(w[:MAX_SCORE_BATCH])
    for key in a.scores:
        np.testing.assert_array_equal(a.scores[key], b.scores[key])
    assert a.per_sensor is not None and b.per_sensor is not None
    np.testing.assert_array_equal(a.per_sensor, b.per_sensor)


def test_loading_a_set_warms_the_arena_with_the_largest_part_on_each_thread(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_model_set scores one full part per part thread, at once, before returning: the
    arena reaches its bound at start (and a reload), not under the plant's first burst."""
    import threading

    from edge_agent.config import AgentSettings
    from edge_agent.model_loading import load_model_set

    calls: list[tuple[str, tuple[int, ...]]] = []
    both = threading.Barrier(2, timeout=10)  # broken (an error) unless the two overlap
    real = ModelSet.score

    def spy(self: ModelSet, windows: np.ndarray) -> object:
        calls.append((threading.current_thread().name, windows.shape))
        both.wait()
        return real(self, windows)

    monkeypatch.setattr(ModelSet, "score", spy)
    settings = AgentSettings(
        units=[{"name": "u1"}], models={"dir": str(model_dir), "batch_threads": 2}
    )
    ms = load_model_set(settings, None)
    shape = (MAX_SCORE_BATCH, ms.window, len(ms.manifest.sensors))
    assert sorted(s for _, s in calls) == [shape, shape]
    assert len({t for t, _ in calls}) == 2 and all(t.startswith("warm-up") for t, _ in calls)
