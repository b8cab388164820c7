"""The two rejection reasons the MQTT link gives, produced for real (no fuzzed payload reaches
them): ``queue_full`` when readings arrive faster than the receive loop takes them off the
bounded intake queue, and ``handler_error`` when handling a message raises.

Both run in the test's event loop against a real Mosquitto, so the Prometheus counter and the
log line can be read directly.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from handmade_models import build_model_set, normal_series
from structlog.testing import LogCapture, capture_logs
from test_server_inprocess import running, settings_for, until

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import MqttLink, subscription_topics
from edge_agent.daemon.mqtt import client as mqtt_client
from edge_agent.daemon.server import Server
from edge_agent.metrics import Metrics
from edge_agent.pipeline.rejections import LINK_REASONS, RejectReason
from harness.broker import MosquittoBroker
from harness.mqtt_client import MqttClient
from harness.telemetry import PLANT, telemetry_payload

WINDOW = 10
FLOOD = 4000


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"edge_agent_{name}", labels) or 0.0


def rejected_total(metrics: Metrics) -> float:
    return sum(sample(metrics, "messages_rejected_total", reason=r) for r in RejectReason)


def flood(port: int, n: int) -> None:
    """``n`` telemetry messages as fast as paho sends them: QoS 0 but the last, whose PUBACK
    means every earlier one has left (one connection keeps their order)."""
    client = MqttClient(port, "flood")
    try:
        rows = normal_series(n, seed=9)
        t0 = float(int(time.time()) - n - 5)
        for i in range(n):
            payload = telemetry_payload(t0 + i, rows[i])
            client.publish(f"plant/{PLANT}/unit1/telemetry", payload, qos=int(i == n - 1))
    finally:
        client.close()


async def test_a_flood_past_the_intake_queue_is_counted_as_queue_full_and_logged_once(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bound is a memory guard (10,000 in production); one message makes it overflow under
    # any burst, because the receive loop needs a few event-loop rounds per message while
    # paho reads one packet every round.
    monkeypatch.setattr(mqtt_client, "INCOMING_QUEUE_MAX", 1)
    metrics = Metrics()
    with capture_logs() as logs:
        settings = settings_for(tmp_path, mosquitto, models_dir, mqtt={"receive_path": "queue"})
        server = Server(settings, metrics=metrics)
        async with running(server):
            await asyncio.to_thread(flood, mosquitto.port, FLOOD)
            # Every message is accounted for once the engine's tick has flushed its counters.
            await until(
                lambda: (
                    sample(metrics, "messages_received_total") == FLOOD
                    and sample(metrics, "messages_accepted_total") + rejected_total(metrics)
                    == FLOOD
                ),
                timeout=30,
            )
    dropped = sample(metrics, "messages_rejected_total", reason="queue_full")
    assert dropped > 1, f"the flood did not overflow the intake queue ({dropped})"
    assert dropped < FLOOD
    lines = [
        e for e in logs if e["event"] == "messages_rejected" and e.get("reason") == "queue_full"
    ]
    # Rate-limited: one WARNING for the first drop; the rest wait for the next interval.
    assert len(lines) == 1, lines
    [line] = lines
    assert line["log_level"] == "warning"
    assert line["count"] == 1 and line["total"] == 1
    assert line["example_topic"] == f"plant/{PLANT}/unit1/telemetry"
    assert "could not keep up" in line["hint"]


def test_these_are_all_the_link_reasons() -> None:
    """The fuzz test reaches every ingest reason; this file must reach every link reason."""
    assert set(LINK_REASONS) == {RejectReason.QUEUE_FULL, RejectReason.HANDLER_ERROR}


def link_settings(broker: MosquittoBroker, receive_path: str) -> AgentSettings:
    return AgentSettings(
        agent_id="agent-t1",
        plant="p1",
        units=[{"name": "u1"}],
        mqtt={
            "host": broker.host,
            "port": broker.port,
            "keepalive": 5,
            "receive_path": receive_path,
        },
    )


@pytest.mark.parametrize("receive_path", ["queue", "direct"])
async def test_a_handler_that_raises_is_counted_as_handler_error_and_the_link_goes_on(
    mosquitto: MosquittoBroker, receive_path: str
) -> None:
    settings = link_settings(mosquitto, receive_path)
    metrics = Metrics()
    cap = LogCapture()
    log: Any = structlog.wrap_logger(None, processors=[cap])
    handled: list[bytes] = []

    def on_message(topic: str, payload: bytes, arrival: float) -> None:
        if payload == b"boom":
            raise RuntimeError("a bug in the handler")
        handled.append(payload)

    link = MqttLink(
        settings,
        metrics,
        log,
        subscriptions=subscription_topics(settings),
        on_message=on_message,
        rng=random.Random(1),
    )
    task = asyncio.create_task(link.run())
    try:
        await until(lambda: link.connected)
        publisher = MqttClient(mosquitto.port, "publisher")
        try:
            for _ in range(3):
                publisher.publish("plant/p1/u1/telemetry", b"boom")
            publisher.publish("plant/p1/u1/telemetry", b"after")
        finally:
            publisher.close()
        await until(lambda: handled == [b"after"])
        # On the direct path the handler runs inside paho's read: the connection survived it.
        assert link.connected and sample(metrics, "reconnects_total") == 0
    finally:
        await asyncio.wait_for(link.stop(), 10)
        await asyncio.wait_for(task, 10)
    assert sample(metrics, "messages_rejected_total", reason="handler_error") == 3
    # Logged once (rate-limited), with the traceback.
    [line] = [e for e in cap.entries if e["event"] == "mqtt_on_message_failed"]
    assert line["log_level"] == "error" and line["exc_info"] is True
    assert line["topic"] == "plant/p1/u1/telemetry"
