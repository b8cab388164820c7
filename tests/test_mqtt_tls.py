"""The TLS context from the settings (edge_agent/daemon/mqtt/tls.py), against a real TLS port.

Refusals (wrong CA, no client certificate) and their log lines are in test_mqtt_errors.py
and test_mqtt_transport.py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from edge_agent.config import TlsSettings
from edge_agent.daemon.mqtt import tls_context
from harness.broker import MosquittoBroker
from harness.pki import Pki


def test_the_broker_is_verified_by_default(mqtt_pki: Pki) -> None:
    ctx = tls_context(TlsSettings(enabled=True, ca_file=mqtt_pki.ca_cert))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_insecure_skips_only_the_host_name(mqtt_pki: Pki) -> None:
    ctx = tls_context(TlsSettings(enabled=True, ca_file=mqtt_pki.ca_cert, insecure=True))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname


def test_an_unreadable_ca_file_raises_before_any_network_io(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        tls_context(TlsSettings(enabled=True, ca_file=tmp_path / "missing.pem"))


def test_a_key_that_does_not_match_the_certificate_raises(mqtt_pki: Pki) -> None:
    tls = TlsSettings(
        enabled=True,
        ca_file=mqtt_pki.ca_cert,
        cert_file=mqtt_pki.client_cert,
        key_file=mqtt_pki.server_key,
    )
    with pytest.raises(ssl.SSLError):
        tls_context(tls)


async def test_the_context_connects_to_a_broker_demanding_a_client_certificate(
    mosquitto_factory: Callable[..., MosquittoBroker], mqtt_pki: Pki
) -> None:
    broker = mosquitto_factory(tls=mqtt_pki, require_certificate=True)
    tls = TlsSettings(
        enabled=True,
        ca_file=mqtt_pki.ca_cert,
        cert_file=mqtt_pki.client_cert,
        key_file=mqtt_pki.client_key,
    )
    async with aiomqtt.Client(broker.host, broker.port, tls_context=tls_context(tls)) as c:
        await asyncio.wait_for(c.publish("t", b"1", qos=1), 5)
