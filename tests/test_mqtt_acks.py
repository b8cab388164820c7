"""Acknowledged publishing (edge_agent/daemon/mqtt/acks.py) against a real Mosquitto whose
ACL denies a topic: on MQTT 5 the PUBACK says so and the alert stays in the outbox."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_agent.config import AgentSettings
from edge_agent.daemon.alert_publisher import AlertPublisher
from edge_agent.daemon.mqtt import MqttLink
from edge_agent.daemon.outbox import AlertMeta, Outbox, OutgoingAlert
from edge_agent.logging_setup import get_logger
from edge_agent.metrics import Metrics
from harness.broker import MosquittoBroker

ACL = "user agent\ntopic readwrite allowed/#\ntopic readwrite plant/#\n"


@pytest.fixture
def acl_broker(tmp_path: Path) -> MosquittoBroker:
    broker = MosquittoBroker(tmp_path / "broker", passwords={"agent": "pw"}, acl=ACL)
    broker.start()
    yield broker  # type: ignore[misc]
    broker.stop()


def link_for(tmp_path: Path, broker: MosquittoBroker, protocol: str) -> MqttLink:
    pw = tmp_path / "pw"
    pw.write_text("pw", encoding="utf-8")
    s = AgentSettings(
        agent_id="agent-a1",
        plant="p1",
        state_dir=str(tmp_path / "state"),
        mqtt={
            "host": broker.host,
            "port": broker.port,
            "protocol": protocol,
            "username": "agent",
            "password_file": str(pw),
        },
        units=[{"name": "u1"}],
    )
    return MqttLink(s, Metrics(), get_logger(), subscriptions=[], on_message=lambda *a: None)


async def test_a_refused_publish_is_false_and_logged_once_per_minute_on_mqtt5(
    tmp_path: Path, acl_broker: MosquittoBroker
) -> None:
    link = link_for(tmp_path, acl_broker, "5")
    runner = asyncio.create_task(link.run())
    try:
        assert await link.wait_connected(10)
        with capture_logs() as logs:
            assert await link.publish("allowed/x", b"1", qos=1) is True
            assert await link.publish("denied/x", b"2", qos=1) is False
            assert await link.publish("denied/x", b"3", qos=1) is False
            assert await link.publish("allowed/x", b"4", qos=1) is True  # the link still works
    finally:
        await link.stop()
        runner.cancel()
    refused = [e for e in logs if e["event"] == "mqtt_publish_refused"]
    assert len(refused) == 1, refused
    assert refused[0]["topic"] == "denied/x" and refused[0]["code"] == 0x87
    assert "authori" in refused[0]["reason"].lower()


async def test_an_alert_the_broker_refuses_stays_in_the_outbox(
    tmp_path: Path, acl_broker: MosquittoBroker
) -> None:
    link = link_for(tmp_path, acl_broker, "5")
    metrics = Metrics()
    outbox = Outbox(tmp_path / "outbox.db", 100, 3600, metrics=metrics)
    publisher = AlertPublisher(link.settings, outbox, link, metrics, time.time)
    runner = asyncio.create_task(link.run())
    try:
        assert await link.wait_connected(10)
        publisher.put(
            [
                OutgoingAlert("plant/p1/u1/alerts", b'{"n": 1}', AlertMeta("a1")),
                OutgoingAlert("denied/alerts", b'{"n": 2}', AlertMeta("a2")),
                OutgoingAlert("plant/p1/u1/alerts", b'{"n": 3}', AlertMeta("a3")),
            ]
        )
        await publisher.drain()
    finally:
        await link.stop()
        runner.cancel()
    # the first went out; the refused one and what follows it wait, in order
    assert [i.meta.alert_id for i in outbox.pending()] == ["a2", "a3"]
    assert metrics.registry.get_sample_value("edge_agent_alerts_published_total") == 1
    outbox.close()


async def test_mqtt_3_1_1_has_no_refusal_code_so_a_denied_publish_looks_delivered(
    tmp_path: Path, acl_broker: MosquittoBroker
) -> None:
    """Documented limit: a 3.1.1 broker drops a denied message and acknowledges it."""
    link = link_for(tmp_path, acl_broker, "3.1.1")
    runner = asyncio.create_task(link.run())
    try:
        assert await link.wait_connected(10)
        assert await link.publish("denied/x", b"2", qos=1) is True
    finally:
        await link.stop()
        runner.cancel()


async def test_start_publish_queues_the_packet_before_it_returns(
    tmp_path: Path, acl_broker: MosquittoBroker
) -> None:
    """``start_publish``: the PUBLISH is in the client's queue when the call returns (so what
    is published after it goes after it); awaiting gives ``publish``'s answer, refusals
    included; without a connection it is False without queueing anything."""
    link = link_for(tmp_path, acl_broker, "5")
    assert await link.start_publish("allowed/x", b"0", qos=1) is False  # not connected
    runner = asyncio.create_task(link.run())
    try:
        assert await link.wait_connected(10)
        before = link.publish_backlog
        allowed = link.start_publish("allowed/x", b"1", qos=1)
        denied = link.start_publish("denied/x", b"2", qos=1)
        assert link.publish_backlog == before + 2  # queued, nothing awaited yet
        assert await denied is False
        assert await allowed is True
    finally:
        await link.stop()
        runner.cancel()
