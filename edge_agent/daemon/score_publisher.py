"""Scores out: best-effort (QoS 0) with back-pressure, every dropped score counted.

Scores are a live view, not a record: when the broker is away or slower than scoring, a
score is dropped (``publish_dropped{reason="disconnected"|"backlog"|"failed"}``) rather
than queued without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import Transport
from edge_agent.metrics import Metrics
from edge_agent.pipeline.engine import StepOutcome, TickResult
from edge_agent.topics import fill

#: At most this many score publishes in flight; the rest are dropped (``backlog``).
MAX_SCORE_PUBLISHES_IN_FLIGHT = 2000


class ScorePublisher:
    """Publishes each scored step's scores message, bounded by ``max_in_flight``."""

    def __init__(
        self,
        settings: AgentSettings,
        link: Transport,
        metrics: Metrics,
        payload: Callable[[StepOutcome], bytes],
        max_in_flight: int = MAX_SCORE_PUBLISHES_IN_FLIGHT,
    ) -> None:
        self.settings = settings
        self.link = link
        self.metrics = metrics
        self._payload = payload
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._tasks: set[asyncio.Task[bool]] = set()

    def publish(self, result: TickResult) -> None:
        """Start publishing the tick's scores (does not wait for them)."""
        if not self.settings.topics.publish_scores or not result.steps:
            return
        if not self.link.connected:
            self.metrics.publish_dropped.labels("disconnected").inc(len(result.steps))
            return
        s = self.settings
        for step in result.steps:
            if not step.scored:
                continue
            if self.in_flight >= self.max_in_flight:
                self.metrics.publish_dropped.labels("backlog").inc()
                continue
            topic = fill(s.topics.scores, plant=s.plant, unit=step.unit, agent_id=s.agent_id)
            self.in_flight += 1
            task = asyncio.create_task(self.link.publish(topic, self._payload(step), qos=0))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[bool]) -> None:
        self._tasks.discard(task)
        self.in_flight -= 1
        if task.cancelled() or task.exception() is not None or not task.result():
            self.metrics.publish_dropped.labels("failed").inc()
