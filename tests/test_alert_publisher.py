"""AlertPublisher (edge_agent/daemon/alert_publisher.py) against a real Mosquitto: alerts go
out in outbox order a window at a time, and the outbox forgets exactly what was acknowledged."""

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
