"""Tick scheduling: when the engine scores.

Scoring runs on a periodic tick (deadlines, staleness) and soon after a message completes a
step: the wake-up comes ``TICK_COALESCE_SECONDS`` later, so steps that complete together are
scored in one batch while latency stays a few ms. The periodic wake-up doubles as the
event-loop lag probe, and ``last_tick`` feeds the watchdog.

Why 5 ms and not less (measured 2026-12-04, two runs each): at 1 ms the 1 k msgs/s steady
pattern of ``benchmarks/latency.py`` (broker with ``set_tcp_nodelay``) went from p50 8.3–8.5
/ p99 15.3–16.3 ms at a subscriber to 4.4–5.3 / 10.6–14.6 ms, both within the 20 ms target;
but smaller batches cost more per window, and at 20 k per-sensor msgs/s
(``benchmarks/end_to_end.py``) the agent's CPU rose from 94–97 % to 102 % and its p50
latency from 27–49 ms to 200–500 ms (queueing at the edge of saturation).

Each tick is the engine's three stages: ``prepare`` and ``finish`` on the event loop, the
models in between on the :class:`~edge_agent.daemon.scoring_worker.ScoringWorker` thread,
so intake goes on while a batch is scored. Ticks never overlap (a lock): that keeps the
batches in order and makes a slow model back-pressure on the aligner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from edge_agent.daemon.scoring_worker import ScoringWorker
from edge_agent.logging_setup import get_logger
from edge_agent.metrics import Metrics
from edge_agent.pipeline.engine import Engine
from edge_agent.pipeline.outcome import TickResult

#: Completed steps are scored this long after the message that completed them.
TICK_COALESCE_SECONDS = 0.005


def tick_interval(step_seconds: float) -> float:
    """A tenth of the step period, between 10 ms and 100 ms."""
    return max(0.01, min(0.1, step_seconds / 10.0))


class Ticker:
    """Runs ``engine.tick`` and hands each result to ``on_result``."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        clock: Callable[[], float],
        on_result: Callable[[TickResult], None],
        worker: ScoringWorker | None = None,
    ) -> None:
        self.engine = engine
        self.worker = worker if worker is not None else ScoringWorker()
        self.metrics = metrics
        self.clock = clock
        self.on_result = on_result
        #: time.monotonic() of the last tick (0: none yet).
        self.last_tick = 0.0
        self.log = get_logger(component="ticker")
        self._ready = asyncio.Event()
        self._scheduled = False
        self._lock = asyncio.Lock()
        self._stopping = False

    @property
    def interval(self) -> float:
        return tick_interval(self.engine.step_seconds)

    def steps_maybe_ready(self) -> None:
        """Call after filing a message: schedules a prompt tick if it completed a step."""
        if self.engine.steps_ready and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(TICK_COALESCE_SECONDS, self._wake)

    def _wake(self) -> None:
        self._scheduled = False
        self._ready.set()

    async def tick_once(self) -> None:
        """One tick: prepare on the loop, score in the worker thread, finish on the loop."""
        async with self._lock:
            engine = self.engine
            job = await self.worker.score(engine.prepare(self.clock()))
            self.on_result(engine.finish(job, self.clock()))

    async def drain(self) -> None:
        """Shutdown: let the batch in flight finish, score what is buffered, stop ticking."""
        self._stopping = True
        try:
            await self.tick_once()
        finally:
            self.worker.close()

    async def run(self) -> None:
        interval = self.interval
        loop = asyncio.get_running_loop()
        while not self._stopping:
            due = loop.time() + interval
            try:
                await asyncio.wait_for(self._ready.wait(), interval)
            except TimeoutError:
                self.metrics.event_loop_lag_seconds.observe(max(0.0, loop.time() - due))
            self._ready.clear()
            if self._stopping:
                break
            self.last_tick = time.monotonic()
            try:
                await self.tick_once()
            except Exception:  # one bad tick must not stop scoring for months
                self.log.exception("tick failed")
