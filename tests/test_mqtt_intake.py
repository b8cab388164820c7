"""The incoming queue and delivery to the agent (edge_agent/daemon/mqtt/intake.py).

Drops at a full queue on a real broker are covered by tests/test_reliability.py; these are
the queue's and the delivery's own rules, on aiomqtt's real ``Message`` objects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiomqtt
import pytest
import structlog
from structlog.testing import LogCapture

from edge_agent.daemon.mqtt.intake import Intake, StampedQueue
from edge_agent.metrics import Metrics


def message(topic: str, payload: bytes = b"x", *, retain: bool = False) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, 1, retain, 1, None)


def rejected(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "edge_agent_messages_rejected_total", {"reason": reason}
    )
    return 0.0 if value is None else value


async def test_stamped_queue_counts_drops_and_keeps_arrival_order() -> None:
    drops: list[str] = []
    queue = StampedQueue(2, on_full=drops.append)
    msgs = [aiomqtt.Message(f"t/{i}", b"x", 1, False, i, None) for i in range(3)]
    queue.put_nowait(msgs[0])
    queue.put_nowait(msgs[1])
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(msgs[2])
    assert drops == ["t/2"]
    first, second = queue.take_arrival(), queue.take_arrival()
    assert first <= second <= time.time()
    assert queue.get_nowait() is msgs[0]


def make_intake(
    received: list[tuple[str, bytes, float]], on_retained: Callable[[str], bool] | None = None
) -> Intake:
    log = structlog.wrap_logger(None, processors=[LogCapture()])
    clock = iter(range(100, 200))
    return Intake(
        Metrics(),
        log,
        lambda topic, payload, arrival: received.append((topic, payload, arrival)),
        on_retained,
        lambda: float(next(clock)),
    )


async def test_queue_class_stamps_with_the_intake_clock_and_counts_drops() -> None:
    received: list[tuple[str, bytes, float]] = []
    intake = make_intake(received)
    made: list[StampedQueue] = []
    queue = intake.queue_class(made)(1)
    assert made == [queue]
    queue.put_nowait(message("plant/p1/u1/sensors/a", b"1"))
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(message("plant/p1/u1/sensors/a", b"2"))
    intake.drain(queue)
    assert received == [("plant/p1/u1/sensors/a", b"1", 100.0)]
    assert rejected(intake.metrics, "queue_full") == 1
    assert intake.metrics.registry.get_sample_value("edge_agent_messages_received_total") == 1


def test_a_refused_retained_message_is_not_delivered() -> None:
    received: list[tuple[str, bytes, float]] = []
    intake = make_intake(received, on_retained=lambda topic: topic.endswith("command"))
    intake.deliver(message("plant/p1/u1/alarms/command", retain=True), 1.0)
    intake.deliver(message("plant/p1/u1/alarms/command"), 2.0)  # not retained: delivered
    intake.deliver(message("plant/p1/u1/sensors/a", retain=True), 3.0)
    assert [(t, a) for t, _, a in received] == [
        ("plant/p1/u1/alarms/command", 2.0),
        ("plant/p1/u1/sensors/a", 3.0),
    ]


def test_a_failing_handler_is_counted_not_raised() -> None:
    def broken(topic: str, payload: bytes, arrival: float) -> None:
        raise RuntimeError("bug")

    log = structlog.wrap_logger(None, processors=[LogCapture()])
    intake = Intake(Metrics(), log, broken, None, time.time)
    intake.deliver(message("plant/p1/u1/sensors/a"), 1.0)
    assert rejected(intake.metrics, "handler_error") == 1
