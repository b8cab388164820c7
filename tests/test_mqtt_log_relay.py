"""paho's warnings kept with their exceptions (edge_agent/daemon/mqtt/log_relay.py).

A real paho client against a TLS-only Mosquitto, without TLS: the broker drops the socket
and paho logs "failed to receive on socket" with the exception as its argument.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiomqtt
import pytest
import structlog
from structlog.testing import LogCapture

from edge_agent.daemon.mqtt.log_relay import PahoLogRelay
from harness.broker import MosquittoBroker
from harness.pki import Pki


async def test_the_relay_keeps_the_exception_paho_logged(
    mosquitto_factory: Callable[..., MosquittoBroker],
    mqtt_pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = mosquitto_factory(tls=mqtt_pki)
    cap = LogCapture()
    relay = PahoLogRelay(structlog.wrap_logger(None, processors=[cap]))
    caplog.set_level(logging.DEBUG)
    client = aiomqtt.Client(broker.host, broker.port, logger=relay.logger(), timeout=0.5)
    with pytest.raises(aiomqtt.MqttError):
        async with client:
            pass
    assert relay.last is not None
    assert relay.last.message.startswith("failed to receive on socket: ")
    assert isinstance(relay.last.error, OSError)
    assert str(relay.last.error) in relay.last.message
    assert [e["event"] for e in cap.entries] == ["mqtt_library_warning"] * len(cap.entries)
    assert "failed to receive" not in caplog.text  # private to the link: never propagates


def test_a_warning_without_an_exception_keeps_only_its_text() -> None:
    relay = PahoLogRelay(structlog.wrap_logger(None, processors=[LogCapture()]))
    relay.logger().warning("There are %d pending publish calls.", 200)
    assert relay.last is not None
    assert (relay.last.message, relay.last.error) == ("There are 200 pending publish calls.", None)
    relay.logger().info("below the relay's level")
    assert relay.last.message == "There are 200 pending publish calls."
