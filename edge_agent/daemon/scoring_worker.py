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
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from edge_agent.pipeline.outcome import ScoreJob, run_models

#: The GIL switch interval while a worker runs (Python's default: 0.005 s).
GIL_SWITCH_SECONDS = 0.0005


class ScoringWorker:
    """One thread that runs :func:`~edge_agent.pipeline.outcome.run_models`."""

    def __init__(self, run: Callable[[ScoreJob], ScoreJob] = run_models) -> None:
        self._run = run
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
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
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, job)
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        """Wait for a batch still running (it finishes in milliseconds) and stop the thread."""
        self._executor.shutdown(wait=True)
        if not self._closed:
            self._closed = True
            sys.setswitchinterval(self._switch_before)
