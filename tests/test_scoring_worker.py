"""Scoring off the event loop (edge_agent/daemon/scoring_worker.py and the ticker).

The real engine and hand-made ONNX models; the worker's thread is held at a gate so the
test can act while a batch is being scored: intake goes on, a second tick waits for the
first (order, back-pressure), a reload lands between two batches, shutdown drains.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from handmade_models import build_model_set, normal_series
from test_engine import NAMES, T0, WINDOW, engine, make_settings, sample
from test_server_inprocess import settings_for, until

from edge_agent.daemon.scoring_worker import ScoringWorker
from edge_agent.daemon.server import Server
from edge_agent.daemon.ticker import Ticker
from edge_agent.metrics import Metrics
from edge_agent.model_loading import load_model_set
from edge_agent.pipeline.engine import Engine, ScoreJob, StepOutcome, TickResult, run_models
from edge_agent.pipeline.outcome import MapParts
from edge_agent.pipeline.scoring import BatchScores, ModelSet
from harness.broker import MosquittoBroker
from harness.telemetry import PLANT, telemetry_payload

UNITS = ["u0", "u1", "u2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW)


@pytest.fixture(scope="module")
def model_set(model_dir: Path) -> ModelSet:
    return load_model_set(make_settings(models={"dir": str(model_dir), "batch_threads": 1}), None)


class GatedRun:
    """``run_models`` that waits at a gate first and notes the thread it ran on."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.threads: list[str] = []
        self.jobs: list[ScoreJob] = []

    def __call__(self, job: ScoreJob, map_parts: MapParts | None = None) -> ScoreJob:
        self.threads.append(threading.current_thread().name)
        self.jobs.append(job)
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return run_models(job, map_parts)


def send(e: Engine, unit: str, ts: float, row: list[float]) -> None:
    payload = orjson.dumps({"ts": ts, "values": dict(zip(NAMES, row, strict=True))})
    e.handle_message(f"plant/plant1/{unit}/telemetry", payload, ts + 0.01)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ticker_for(e: Engine, run: GatedRun, clock: FakeClock) -> tuple[Ticker, list[TickResult]]:
    results: list[TickResult] = []
    return Ticker(e, e.metrics, clock, results.append, ScoringWorker(run)), results


async def entered(run: GatedRun) -> None:
    await until(run.entered.is_set)
    run.entered.clear()


SERIES = {u: normal_series(WINDOW + 8, seed=40 + i).tolist() for i, u in enumerate(UNITS)}


def feed(e: Engine, steps: range) -> None:
    for k in steps:
        for u in UNITS:
            send(e, u, T0 + k, SERIES[u][k])


async def test_intake_goes_on_while_a_batch_is_scored_and_batches_finish_in_order(
    model_set: ModelSet,
) -> None:
    e, metrics = engine(model_set, units=[{"name": u} for u in UNITS])
    run = GatedRun()
    clock = FakeClock(T0 + WINDOW + 0.5)
    ticker, results = ticker_for(e, run, clock)
    feed(e, range(WINDOW + 1))
    first = asyncio.create_task(ticker.tick_once())
    await entered(run)  # the first batch is in the worker thread, held at the gate
    # Intake runs on the loop meanwhile, and a second tick waits: one batch in flight.
    feed(e, range(WINDOW + 1, WINDOW + 8))
    clock.now = T0 + WINDOW + 7.5
    second = asyncio.create_task(ticker.tick_once())
    await asyncio.sleep(0.2)
    assert len(run.jobs) == 1 and ticker.worker.in_flight == 1 and not first.done()
    run.gate.set()
    await asyncio.gather(first, second)
    assert len(results) == 2 and len(run.jobs) == 2
    assert set(run.threads) == {"scoring_0"}  # the models never ran on the loop's thread
    # The steps that closed while the first batch was scored went out as one larger batch.
    assert [len(j.batch_rows) for j in run.jobs] == [2 * len(UNITS), 7 * len(UNITS)]
    for u in UNITS:
        ts = [s.ts for r in results for s in r.steps if s.unit == u]
        assert ts == sorted(ts) and len(ts) == len(set(ts)) == WINDOW + 8
    # Threaded scores are the engine's own: a second engine ticked inline agrees.
    ref, _ = engine(model_set, units=[{"name": u} for u in UNITS])
    feed(ref, range(WINDOW + 1))
    inline = ref.tick(T0 + WINDOW + 0.5).steps
    feed(ref, range(WINDOW + 1, WINDOW + 8))
    inline += ref.tick(T0 + WINDOW + 7.5).steps
    assert [(s.unit, s.ts, s.score) for s in inline] == [
        (s.unit, s.ts, s.score) for r in results for s in r.steps
    ]
    assert sample(metrics, "steps_scored_total") == 9 * len(UNITS)
    ticker.worker.close()


async def test_a_reload_lands_between_two_batches(model_set: ModelSet, tmp_path: Path) -> None:
    e, _ = engine(model_set, units=[{"name": u} for u in UNITS])
    other_dir = build_model_set(tmp_path / "v2", window=WINDOW, lstm_threshold=1.7)
    other = load_model_set(make_settings(models={"dir": str(other_dir)}), None)
    assert other.version != model_set.version
    run = GatedRun()
    clock = FakeClock(T0 + WINDOW + 0.5)
    ticker, results = ticker_for(e, run, clock)
    feed(e, range(WINDOW + 1))
    first = asyncio.create_task(ticker.tick_once())
    await entered(run)
    e.reconfigure(e.settings, other)  # SIGHUP while the old set scores a batch
    run.gate.set()
    await first
    feed(e, range(WINDOW + 1, WINDOW + 3))
    clock.now = T0 + WINDOW + 2.5
    await ticker.tick_once()
    old, new = ([s for s in r.steps if s.scored] for r in results)
    assert old and new

    def version(step: StepOutcome) -> str:
        return str(orjson.loads(e.scores_payload(step))["model_set_version"])

    assert {version(s) for s in old} == {model_set.version}
    assert {s.models["lstm_ae"].threshold for s in old} != {1.7}
    assert {version(s) for s in new} == {other.version}
    assert {s.models["lstm_ae"].threshold for s in new} == {1.7}
    ticker.worker.close()


async def test_drain_waits_for_the_batch_in_flight_then_scores_what_is_buffered(
    model_set: ModelSet,
) -> None:
    e, _ = engine(model_set, units=[{"name": u} for u in UNITS])
    run = GatedRun()
    clock = FakeClock(T0 + WINDOW + 0.5)
    ticker, results = ticker_for(e, run, clock)
    loop_task = asyncio.create_task(ticker.run())
    feed(e, range(WINDOW + 1))
    ticking = asyncio.create_task(ticker.tick_once())
    await entered(run)
    feed(e, range(WINDOW + 1, WINDOW + 4))
    clock.now = T0 + WINDOW + 3.5
    drained = asyncio.create_task(ticker.drain())
    await asyncio.sleep(0.1)
    assert not drained.done()  # it waits for the batch in the thread
    run.gate.set()
    await asyncio.gather(ticking, drained)
    scored = [s for r in results for s in r.steps if s.scored]
    assert len(scored) == 5 * len(UNITS)  # both batches, nothing left behind
    await asyncio.wait_for(loop_task, 1.0)  # the tick loop ends after a drain


async def test_shutdown_scores_every_buffered_step(
    tmp_path: Path, mosquitto: MosquittoBroker, model_dir: Path
) -> None:
    """The live server: a burst filed just before SIGTERM is scored before the agent exits."""
    server = Server(settings_for(tmp_path, mosquitto, model_dir, units=UNITS), metrics=Metrics())
    ticks: list[TickResult] = []
    server.hooks.on_tick = ticks.append
    task = asyncio.create_task(server.serve())
    await until(lambda: server.link is not None and server.link.connected)
    t0 = time.time() - WINDOW - 10
    for k in range(WINDOW + 4):
        for u in UNITS:
            topic = f"plant/{PLANT}/{u}/telemetry"
            server._on_message(topic, telemetry_payload(t0 + k, SERIES[u][k]), time.time())
    server.handle_exit()  # before the coalesced tick (5 ms) could run
    await asyncio.wait_for(task, 10)
    steps = [s for r in ticks for s in r.steps if s.unit in UNITS]
    assert sum(1 for s in steps if s.scored) == 5 * len(UNITS)


def test_the_worker_shortens_the_gil_switch_interval_while_it_runs() -> None:
    from edge_agent.daemon.scoring_worker import GIL_SWITCH_SECONDS

    before = sys.getswitchinterval()
    worker = ScoringWorker()
    assert sys.getswitchinterval() == pytest.approx(min(before, GIL_SWITCH_SECONDS))
    worker.close()
    worker.close()  # idempotent: restores once
    assert sys.getswitchinterval() == pytest.approx(before)


async def test_a_large_batch_is_scored_as_parts_on_threads_of_their_own(
    model_set: ModelSet, model_dir: Path
) -> None:
    """``models.batch_threads: 2``: a 32-window batch (``MAX_SCORE_BATCH``) is two parts of
    16, scored at once on two pool threads, with exactly the scores one thread gives; with a
    set loaded for one thread (a reload) the next batch is one part again."""
    settings = make_settings(
        units=[{"name": f"b{i}"} for i in range(32)],
        models={"dir": str(model_dir), "batch_threads": 2},
    )
    parallel = load_model_set(settings, None)
    assert parallel.parallel == 2

    def job_for(ms: ModelSet) -> tuple[Engine, ScoreJob]:
        e = Engine(settings, ms, Metrics())
        for k in range(WINDOW):
            for i in range(32):
                send(e, f"b{i}", T0 + k, SERIES[UNITS[i % 3]][k])
            if k < WINDOW - 1:
                e.tick(T0 + k + 0.05)
        job = e.prepare(T0 + WINDOW - 1 + 0.05)
        assert len(job.batch_rows) == 32
        return e, job

    seen: list[tuple[str, int]] = []
    real_score = parallel.score
    both = threading.Barrier(2, timeout=10)  # broken (an error) unless the parts overlap

    def spy(windows: np.ndarray) -> BatchScores:
        seen.append((threading.current_thread().name, len(windows)))
        both.wait()
        return real_score(windows)

    parallel.score = spy  # type: ignore[method-assign]
    worker = ScoringWorker()
    try:
        _, job = job_for(parallel)
        await worker.score(job)
        assert sorted(n for _, n in seen) == [16, 16]
        assert len({t for t, _ in seen}) == 2 and all(t.startswith("scoring-part") for t, _ in seen)
        assert worker.part_threads == 2
        _, alone = job_for(model_set)  # batch_threads 1: one part, on the worker's thread
        run_models(alone)
        assert len(alone.scored) == 1
        for key in alone.scored[0].scores:
            together = np.concatenate([b.scores[key] for b in job.scored])
            np.testing.assert_array_equal(together, alone.scored[0].scores[key])
        _, again = job_for(model_set)  # as after a reload to batch_threads 1
        await worker.score(again)
        assert len(again.scored) == 1
    finally:
        worker.close()
