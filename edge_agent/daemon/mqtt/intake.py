"""Messages in: the bounded queue after paho's socket callback, and delivery to the agent.

Two receive paths (``mqtt.receive_path``) end in the same delivery: ``queue`` is aiomqtt's
own (below), ``direct`` is paho's callback straight to the agent (:mod:`.direct`). Either
way a handler that raises is counted as ``messages_rejected{reason="handler_error"}`` and
logged at most once per :data:`HANDLER_ERROR_LOG_EVERY_SECONDS`, never crashing the link.

aiomqtt queues incoming messages between paho's socket callback and the link's receive
loop; the queue is bounded (:data:`~edge_agent.daemon.mqtt.client.INCOMING_QUEUE_MAX`) so
a stalled loop cannot eat the memory of a small box. aiomqtt cannot pause the socket, so a
message arriving at a full queue is *dropped* (after paho has acknowledged it) and counted:
the bound is a memory guard, not flow control.

This hooks aiomqtt 2.x's ``queue_type`` constructor argument, which aiomqtt 3 removes: the
reason ``pyproject.toml`` pins ``aiomqtt<3``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import aiomqtt
from structlog.typing import FilteringBoundLogger

from edge_agent.metrics import Metrics
from edge_agent.pipeline.lost_data import LostDataWarnings
from edge_agent.pipeline.rejections import RejectReason

from .transport import MessageCallback

#: Queued messages handled per wake-up of the receive loop before it yields to others.
RECEIVE_BATCH = 256
#: At most one log line per this many seconds for failing handlers (with the count since).
HANDLER_ERROR_LOG_EVERY_SECONDS = 60.0


class StampedQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue, remembering when each message arrived and counting drops.

    aiomqtt fills it from paho's socket callback with ``put_nowait`` and discards the
    message when it raises ``QueueFull``. Arrival times are kept in FIFO order beside the
    messages so latency metrics include the time spent waiting here.
    """

    def __init__(
        self,
        maxsize: int = 0,
        on_full: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(maxsize)
        self.arrivals: deque[float] = deque()
        self._on_full = on_full
        self._clock = clock

    def put_nowait(self, item: aiomqtt.Message) -> None:
        try:
            super().put_nowait(item)
        except asyncio.QueueFull:
            if self._on_full is not None:
                self._on_full(item.topic.value)
            raise
        self.arrivals.append(self._clock())

    def take_arrival(self) -> float:
        return self.arrivals.popleft() if self.arrivals else self._clock()


def queue_class(
    on_full: Callable[[str], None], made: list[StampedQueue], clock: Callable[[], float]
) -> type[StampedQueue]:
    """A queue class for one client that hands back the instance aiomqtt creates from it.

    aiomqtt takes a class, not an instance, and keeps the queue private; ``made`` receives
    the one it creates so the link can read arrivals and drain it after a disconnect.
    """

    class _LinkQueue(StampedQueue):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(maxsize, on_full, clock)
            made.append(self)

    return _LinkQueue


class Intake:
    """From aiomqtt to ``on_message``: arrival stamps, the retained check, drops counted.

    The receive loop never waits on the network: it only hands each message to the
    synchronous ``on_message``, so nothing a handler or a publisher does stalls intake.
    """

    def __init__(
        self,
        metrics: Metrics,
        log: FilteringBoundLogger,
        on_message: MessageCallback,
        on_retained: Callable[[str], bool] | None,
        clock: Callable[[], float],
    ) -> None:
        self.metrics = metrics
        self.log = log
        self.on_message = on_message
        #: Sees the topic of every *retained* message first; True = drop it (e.g. a command
        #: someone published retained, which would otherwise replay at every reconnect).
        self.on_retained = on_retained
        #: Stamps each message's arrival (the agent's clock, injectable for replays).
        self.clock = clock
        self._lost = LostDataWarnings(log)
        self._errors_unlogged = 0
        self._error_logged_at: float | None = None

    def queue_class(self, made: list[StampedQueue]) -> type[StampedQueue]:
        """The ``queue_type`` for one client; ``made`` receives the queue aiomqtt creates."""
        return queue_class(self.count_drop, made, self.clock)

    async def receive(self, client: aiomqtt.Client, queue: StampedQueue | None) -> None:
        """Deliver messages until the connection ends (aiomqtt then raises ``MqttError``)."""
        # aiomqtt's iterator costs a task and a few loop rounds per message, while paho reads
        # packets on every round: under a flood the queue would only grow. So after each
        # message take what else is queued (a bounded batch) before waiting again.
        async for message in client.messages:
            if queue is None:
                self.deliver(message, self.clock())
                continue
            self.deliver(message, queue.take_arrival())
            for _ in range(RECEIVE_BATCH):
                if queue.empty():
                    break
                self.deliver(queue.get_nowait(), queue.take_arrival())

    def drain(self, queue: StampedQueue) -> None:
        """Deliver what is still queued; aiomqtt stops iterating at a disconnect without it."""
        while not queue.empty():
            self.deliver(queue.get_nowait(), queue.take_arrival())

    def deliver(self, message: aiomqtt.Message, arrival: float) -> None:
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = bytes(payload) if isinstance(payload, bytearray) else b""
        try:
            check = self.on_retained if message.retain else None
            if check is not None and check(message.topic.value):
                return
            self.on_message(message.topic.value, payload, arrival)
        except Exception:
            # A bug in one handler must not take the connection down with it.
            self.handler_failed(message.topic.value)

    def deliver_direct(self, topic: str, payload: bytes, retain: bool, arrival: float) -> None:
        """The direct path: a decoded PUBLISH straight to ``on_message``."""
        try:
            if retain and self.on_retained is not None and self.on_retained(topic):
                return
            self.on_message(topic, payload, arrival)
        except Exception:
            # Raised inside the socket reader, it would end the connection: count it instead.
            self.handler_failed(topic)

    def handler_failed(self, topic: str) -> None:
        """Count a failed handler; log it (with its traceback) rate-limited."""
        self.metrics.messages_rejected.labels(reason=RejectReason.HANDLER_ERROR).inc()
        now = time.monotonic()
        last = self._error_logged_at
        if last is not None and now - last < HANDLER_ERROR_LOG_EVERY_SECONDS:
            self._errors_unlogged += 1
            return
        self.log.exception("mqtt_on_message_failed", topic=topic, since_last=self._errors_unlogged)
        self._error_logged_at = now
        self._errors_unlogged = 0

    def count_drop(self, topic: str) -> None:
        # Received from the broker (and acknowledged) but never handed on: counted on both
        # sides so that received = accepted + rejected still adds up.
        self.metrics.messages_received.inc()
        self.metrics.messages_rejected.labels(reason=RejectReason.QUEUE_FULL).inc()
        self._lost.rejected(RejectReason.QUEUE_FULL, topic)
