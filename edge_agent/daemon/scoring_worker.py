"""Scoring off the event loop: one worker thread runs the models of each tick's batch.

onnxruntime releases the GIL while it runs, so while a batch is scored the event loop goes
on taking messages (parsing, filing under steps) on the other core. The hand-off is
bounded at one batch in flight: :class:`~edge_agent.daemon.ticker.Ticker` awaits each
batch before it prepares the next, so batches are finished in the order they were
prepared (per-unit order is kept) and a slow model is back-pressure, not a queue: the steps
that close meanwhile wait in the aligner and go out together as the next, larger batch
(batching is where scoring gets cheaper per window). Nothing is dropped here; the aligner's
own bounds and counters apply.

The hand-off has one cost of its own: a thread waiting for the GIL gets it only after the
holder's switch interval (5 ms by default), and a batch crosses that wait several times (each
``session.run`` releases and re-takes the GIL while the loop is busy with a burst of
messages). The worker lowers the interval to :data:`GIL_SWITCH_SECONDS` while it runs and
restores it when closed (measured: burst p99 at a subscriber 324 → 117 ms, one run each).

A large batch is cut into parts (:func:`~edge_agent.pipeline.outcome.batch_slices`) that
run at once on ``models.batch_threads`` threads, sharing the sessions: one LSTM is a chain
of 60 small steps, so onnxruntime's own intra-op threads synchronise 240 times a window
and lose (measured: 125 windows 33–36 ms on one thread, 40–48 ms with two intra-op
threads, 15–21 ms as two parts on two threads). The pool follows the model set's
``parallel``, so a SIGHUP that changes it takes effect at the next batch.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from edge_agent.pipeline.outcome import MapParts, ScoreJob, run_models

#: The GIL switch interval while a worker runs (Python's default: 0.005 s).
GIL_SWITCH_SECONDS = 0.0005


class ScoringWorker:
    """One thread that runs :func:`~edge_agent.pipeline.outcome.run_models`."""

    def __init__(self, run: Callable[[ScoreJob, MapParts | None], ScoreJob] = run_models) -> None:
        self._run = run
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        #: Threads for the parts of a large batch (None until a set asks for more than one).
        self._parts: ThreadPoolExecutor | None = None
        self._parts_n = 1
        self._switch_before = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_before, GIL_SWITCH_SECONDS))
        self._closed = False
        #: Batches handed over and not yet back (0 or 1: the ticker awaits each one).
        self.in_flight = 0

    async def score(self, job: ScoreJob) -> ScoreJob:
        """The job with its scores; a job without windows does not visit the thread."""
        if not job.has_windows:
            return job
        self.in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._run, job, self._map_for(job))
        finally:
            self.in_flight -= 1

    def _map_for(self, job: ScoreJob) -> MapParts | None:
        """The pool's ``map`` sized to the job's model set (None: one thread is asked for)."""
        wanted = job.model_set.parallel
        if wanted <= 1:
            return None
        pool = self._parts
        if pool is None or self._parts_n != wanted:
            if pool is not None:
                pool.shutdown(wait=False)  # idle: only one batch is ever in flight
            pool = self._parts = ThreadPoolExecutor(wanted, thread_name_prefix="scoring-part")
            self._parts_n = wanted
        return pool.map

    @property
    def part_threads(self) -> int:
        """Threads a large batch is scored on now (1: no pool)."""
        return self._parts_n

    def close(self) -> None:
        """Wait for a batch still running (it finishes in milliseconds) and stop the threads."""
        self._executor.shutdown(wait=True)
        if self._parts is not None:
            self._parts.shutdown(wait=True)
        if not self._closed:
            self._closed = True
            sys.setswitchinterval(self._switch_before)
