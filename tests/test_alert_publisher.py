"""AlertPublisher (edge_agent/daemon/alert_publisher.py) against a real Mosquitto: alerts go
out in outbox order a window at a time, ahead of the scores published after them, and the
outbox forgets exactly what was acknowledged."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
import orjson
import pytest
from test_server_inprocess import until

from edge_agent.config import AgentSettings
from edge_agent.daemon.alert_publisher import IN_FLIGHT, AlertPublisher
from edge_agent.daemon.mqtt import MqttLink
from edge_agent.daemon.outbox import AlertMeta, Outbox, OutgoingAlert
from edge_agent.logging_setup import get_logger
from edge_agent.metrics import Metrics
from harness.broker import MosquittoBroker


def settings(tmp_path: Path, broker: MosquittoBroker, protocol: str) -> AgentSettings:
    return AgentSettings(
        agent_id="agent-p1",
        plant="p1",
        state_dir=str(tmp_path / "state"),
        mqtt={"host": broker.host, "port": broker.port, "protocol": protocol},
        units=[{"name": "u1"}],
    )


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_burst_of_alerts_goes_out_in_order_and_leaves_the_outbox_empty(
    tmp_path: Path, mosquitto: MosquittoBroker, protocol: str
) -> None:
    s = settings(tmp_path, mosquitto, protocol)
    metrics = Metrics()
    outbox = Outbox(tmp_path / "outbox.db", 1000, 3600, metrics=metrics)
    link = MqttLink(s, metrics, get_logger(), subscriptions=[], on_message=lambda *a: None)
    published: list[int] = []
    publisher = AlertPublisher(
        s, outbox, link, metrics, time.time, lambda item, payload: published.append(item.id)
    )
    n = 3 * IN_FLIGHT + 5  # several windows and a partial one
    received: list[int] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="sub") as sub:
        await sub.subscribe("alerts/#", qos=1)

        async def collect() -> None:
            async for message in sub.messages:
                received.append(orjson.loads(bytes(message.payload))["seq"])  # type: ignore[arg-type]

        collector = asyncio.create_task(collect())
        runner = asyncio.create_task(link.run())
        try:
            assert await link.wait_connected(10)
            stored = publisher.put(
                OutgoingAlert(f"alerts/u1/{i}", orjson.dumps({"seq": i}), AlertMeta(f"a{i}"))
                for i in range(n)
            )
            assert stored == n and outbox.depth() == n
            await publisher.drain()
            await until(lambda: len(received) == n)
        finally:
            await link.stop()
            runner.cancel()
            collector.cancel()
    assert received == list(range(n))  # in outbox order, each once
    assert published == sorted(published) and len(published) == n
    assert outbox.depth() == 0 and outbox.pending() == []
    assert metrics.registry.get_sample_value("edge_agent_alerts_published_total") == n
    outbox.close()


async def test_a_ticks_alerts_go_out_ahead_of_the_scores_published_after_them(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The server puts a tick's alerts, then publishes its scores (QoS 0, no task): the
    alerts must reach a subscriber first, and alerts stored while a window is in flight
    follow it in order."""
    s = settings(tmp_path, mosquitto, "5")
    metrics = Metrics()
    outbox = Outbox(tmp_path / "outbox.db", 1000, 3600, metrics=metrics)
    link = MqttLink(s, metrics, get_logger(), subscriptions=[], on_message=lambda *a: None)
    publisher = AlertPublisher(s, outbox, link, metrics, time.time)
    received: list[str] = []

    def alerts(first: int, n: int) -> list[OutgoingAlert]:
        return [
            OutgoingAlert(f"alerts/u1/{i}", orjson.dumps({"seq": i}), AlertMeta(f"a{i}"))
            for i in range(first, first + n)
        ]

    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="sub2") as sub:
        await sub.subscribe([("alerts/#", 1), ("scores/#", 1)])

        async def collect() -> None:
            async for message in sub.messages:
                received.append(str(message.topic))

        collector = asyncio.create_task(collect())
        runner = asyncio.create_task(link.run())
        drainer = asyncio.create_task(publisher.run())
        try:
            assert await link.wait_connected(10)
            assert publisher.put(alerts(0, 3)) == 3
            for k in range(20):
                assert link.publish_nowait(f"scores/u1/{k}", b"{}", qos=0)
            assert publisher.put(alerts(3, 2)) == 2  # while the first window is in flight
            await until(lambda: len(received) == 25)
            await until(lambda: outbox.depth() == 0)
        finally:
            await link.stop()
            for task in (runner, collector, drainer):
                task.cancel()
    assert received[:3] == ["alerts/u1/0", "alerts/u1/1", "alerts/u1/2"], received
    later = [t for t in received if t.startswith("alerts/")]
    assert later == [f"alerts/u1/{i}" for i in range(5)]  # in outbox order, each once
    outbox.close()
