"""``publish_nowait`` and the direct receive path (``mqtt.receive_path: direct``), against
real Mosquitto brokers.

The direct path replaces aiomqtt's message queue and socket reader with paho's callback and
a batched reader (edge_agent/daemon/mqtt/direct.py); ``publish_nowait`` hands a PUBLISH to
paho without a task or a future. The rest of the link's behaviour on the direct path is
covered by the tests parametrized over ``RECEIVE_PATHS`` in test_mqtt_transport.py and
test_intake_rejections.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from test_mqtt_transport import (
    PROTOCOLS,
    RunningLink,
    agent_settings,
    capture_logger,
    eventually,
    next_message,
    observer,
)

from edge_agent.daemon.mqtt import MqttLink, direct, subscription_topics
from edge_agent.metrics import Metrics
from harness.broker import MosquittoBroker
from harness.mqtt_client import MqttClient

# -- publish_nowait ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_publish_nowait_messages_arrive_in_order(
    mosquitto: MosquittoBroker, protocol: str
) -> None:
    settings = agent_settings(mosquitto, protocol=protocol)
    async with (
        RunningLink(settings) as run,
        observer(mosquitto, "plant/p1/u1/scores", protocol=protocol) as obs,
    ):
        assert await run.link.wait_connected(5)
        sent = [f'{{"n":{i}}}'.encode() for i in range(200)]
        # All handed over in one go, without yielding: the backlog is what paho holds.
        assert all(run.link.publish_nowait("plant/p1/u1/scores", p) for p in sent)
        assert run.link.publish_backlog >= len(sent)
        got = [(await next_message(obs)).payload for _ in sent]
        assert got == sent
        await eventually(lambda: run.link.publish_backlog == 0)


async def test_publish_nowait_is_false_when_disconnected_and_for_a_bad_topic(
    mosquitto: MosquittoBroker,
) -> None:
    settings = agent_settings(mosquitto)
    async with RunningLink(settings) as run:
        assert not run.link.publish_nowait("plant/p1/u1/scores", b"before")  # not yet connected
        assert await run.link.wait_connected(5)
        assert not run.link.publish_nowait("plant/+/u1/scores", b"wildcard")  # invalid topic
        mosquitto.kill()
        await eventually(lambda: not run.link.connected)
        assert not run.link.publish_nowait("plant/p1/u1/scores", b"after")
        assert run.link.publish_backlog == 0


# -- the direct receive path -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_direct_path_delivers_in_order_with_arrival_stamps(
    mosquitto: MosquittoBroker, protocol: str
) -> None:
    """More messages than one read takes, sent at once: order and stamps survive framing."""
    n = 3 * direct.READ_BYTES // 20 + 7
    settings = agent_settings(mosquitto, protocol=protocol, receive_path="direct")
    async with RunningLink(settings) as run:
        assert await run.link.wait_connected(5)
        before = time.time()
        publisher = MqttClient(mosquitto.port, "publisher")
        try:
            # QoS 0 (no wait per message, so they arrive as a burst), the last one QoS 1: its
            # PUBACK means all were sent before the publisher disconnects.
            for i in range(n):
                publisher.publish("plant/p1/u1/sensors/load", str(i).encode(), qos=int(i == n - 1))
        finally:
            publisher.close()
        await run.wait_received(n)
        after = time.time()
    assert [p for _, p, _ in run.received] == [str(i).encode() for i in range(n)]
    arrivals = [a for _, _, a in run.received]
    assert arrivals == sorted(arrivals) and before <= arrivals[0] and arrivals[-1] <= after
    assert all(type(p) is bytes for _, p, _ in run.received)


async def test_direct_path_bypasses_the_intake_queue(mosquitto: MosquittoBroker) -> None:
    """Nothing reaches aiomqtt's queue (so nothing can be dropped there as queue_full)."""
    settings = agent_settings(mosquitto, receive_path="direct")
    async with RunningLink(settings) as run:
        assert await run.link.wait_connected(5)
        client = run.link._client
        assert client is not None
        publisher = MqttClient(mosquitto.port, "publisher")
        try:
            for i in range(50):
                publisher.publish("plant/p1/u1/sensors/load", str(i).encode())
        finally:
            publisher.close()
        await run.wait_received(50)
        await asyncio.sleep(0.05)
        assert client._queue.qsize() == 0
        assert run.metrics.registry.get_sample_value(
            "edge_agent_messages_rejected_total", {"reason": "queue_full"}
        ) in (None, 0.0)


async def test_direct_path_holds_what_the_session_delivers_until_subscribed(
    mosquitto: MosquittoBroker,
) -> None:
    """A persistent session delivers right after CONNACK, while the link is still subscribing:
    those messages wait (as in aiomqtt's queue) and reach the handler once the link is up, so
    their scores are not dropped as "disconnected"."""
    settings = agent_settings(mosquitto, receive_path="direct")
    async with RunningLink(settings) as first:
        assert await first.link.wait_connected(5)
    async with observer(mosquitto) as pub:
        for i in range(20):
            await pub.publish("plant/p1/u1/sensors/load", str(i).encode(), qos=1)
    seen: list[tuple[bytes, bool]] = []
    link = MqttLink(
        settings,
        Metrics(),
        capture_logger()[0],
        subscriptions=subscription_topics(settings),
        on_message=lambda topic, payload, arrival: seen.append((payload, link.connected)),
    )
    task = asyncio.create_task(link.run())
    try:
        await eventually(lambda: len(seen) >= 20)
    finally:
        await asyncio.wait_for(link.stop(), 10)
        await asyncio.wait_for(task, 10)
    assert [p for p, _ in seen] == [str(i).encode() for i in range(20)]
    assert all(up for _, up in seen)


async def test_direct_path_acknowledges_qos1_messages_it_decodes(
    mosquitto: MosquittoBroker,
) -> None:
    """QoS 1 deliveries are decoded by the agent's framer, so it sends their PUBACKs: a broker
    that got none would deliver them again to the next connection of the same session."""
    settings = agent_settings(mosquitto, receive_path="direct", protocol="3.1.1")
    async with RunningLink(settings) as run:
        assert await run.link.wait_connected(5)
        async with observer(mosquitto) as pub:
            for i in range(30):
                await pub.publish("plant/p1/u1/sensors/load", str(i).encode(), qos=1)
        await run.wait_received(30)
    async with RunningLink(settings) as again:
        assert await again.link.wait_connected(5)
        async with observer(mosquitto) as pub:
            await pub.publish("plant/p1/u1/sensors/load", b"after", qos=1)
        await again.wait_received(1)
        await asyncio.sleep(0.2)
    assert [p for _, p, _ in again.received] == [b"after"]


async def test_direct_path_takes_mqtt5_messages_with_properties(
    mosquitto: MosquittoBroker,
) -> None:
    """Properties a producer sets (content type, user properties) do not reach the payload."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    settings = agent_settings(mosquitto, receive_path="direct", protocol="5")
    properties = Properties(PacketTypes.PUBLISH)
    properties.ContentType = "application/json"
    properties.UserProperty = [("site", "north"), ("gateway", "g" * 300)]
    async with RunningLink(settings) as run:
        assert await run.link.wait_connected(5)
        async with observer(mosquitto) as pub:
            for i in range(5):
                await pub.publish(
                    "plant/p1/u1/sensors/load", str(i).encode(), qos=i % 2, properties=properties
                )
        await run.wait_received(5)
    assert [p for _, p, _ in run.received] == [str(i).encode() for i in range(5)]


def test_the_installed_paho_has_what_the_framed_reader_needs() -> None:
    """An upgrade of paho that drops one of these internals must be noticed here (the link
    would fall back to paho's slower reader)."""
    import paho.mqtt.client as paho

    assert direct.framed_reading_supported(paho.Client(paho.CallbackAPIVersion.VERSION2))


async def test_the_fallback_reader_delivers_too(
    mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the internals the direct path still works, with paho reading each packet."""
    monkeypatch.setattr(direct, "framed_reading_supported", lambda client: False)
    settings = agent_settings(mosquitto, receive_path="direct")
    async with RunningLink(settings) as run:
        assert await run.link.wait_connected(5)
        publisher = MqttClient(mosquitto.port, "publisher")
        try:
            for i in range(100):
                publisher.publish("plant/p1/u1/sensors/load", str(i).encode(), qos=int(i == 99))
        finally:
            publisher.close()
        await run.wait_received(100)
    assert [p for _, p, _ in run.received] == [str(i).encode() for i in range(100)]
