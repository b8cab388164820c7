"""Scores out: best-effort (QoS 0) with back-pressure, every dropped score counted.

Scores are a live view, not a record: when the broker is away or slower than scoring, a
score is dropped (``publish_dropped{reason="disconnected"|"backlog"|"failed"}``) rather
than queued without bound. Each score is handed to the client synchronously
(:meth:`~edge_agent.daemon.mqtt.Transport.publish_nowait`): no task or future per message,
which at thousands of scores a second cost more than the scoring. The back-pressure signal
is the client's backlog of packets not yet written to the socket: it grows only when the
broker does not take them.
"""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import Transport
from edge_agent.metrics import Metrics
from edge_agent.pipeline.engine import StepOutcome, TickResult
from edge_agent.topics import fill

#: At most this many packets waiting for the socket; further scores are dropped (``backlog``).
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

    @property
    def in_flight(self) -> int:
        """Outgoing packets handed to the client and not yet written to the socket."""
        return self.link.publish_backlog

    def publish(self, result: TickResult) -> None:
        """Hand the tick's scores to the client (does not wait for them)."""
        if not self.settings.topics.publish_scores or not result.steps:
            return
        link = self.link
        if not link.connected:
            self.metrics.publish_dropped.labels("disconnected").inc(len(result.steps))
            return
        s = self.settings
        dropped = self.metrics.publish_dropped
        for step in result.steps:
            if not step.scored:
                continue
            if link.publish_backlog >= self.max_in_flight:
                dropped.labels("backlog").inc()
                continue
            topic = fill(s.topics.scores, plant=s.plant, unit=step.unit, agent_id=s.agent_id)
            if not link.publish_nowait(topic, self._payload(step), qos=0):
                dropped.labels("disconnected" if not link.connected else "failed").inc()
