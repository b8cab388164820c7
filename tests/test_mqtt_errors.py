"""Why a connection failed (edge_agent/daemon/mqtt/errors.py), from real failures.

Each case makes the failure happen for real — a closed port, an unknown host, a wrong
password on a Mosquitto with a password file, a certificate from another CA, a broker that
demands a client certificate, a plain client on a TLS port, a broker killed mid-connection —
and checks both what the library handed over (the code or the exception type the
classification reads) and the operator's message. A few CONNACK codes no Mosquitto sends
are built directly, with aiomqtt's and paho's own classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from structlog.testing import LogCapture

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import CAUSES
from edge_agent.daemon.mqtt.client import build_client
from edge_agent.daemon.mqtt.errors import describe_error, subscription_refused
from edge_agent.daemon.mqtt.log_relay import LibraryWarning, PahoLogRelay
from harness.broker import MosquittoBroker
from harness.net import free_port
from harness.pki import Pki

PROTOCOLS = ["5", "3.1.1"]


def settings(host: str, port: int, **mqtt: Any) -> AgentSettings:
    return AgentSettings(
        agent_id="agent-e1",
        plant="p1",
        units=[{"name": "u1"}],
        mqtt={"host": host, "port": port, **mqtt},
    )


async def failure(
    s: AgentSettings, timeout: float = 2.0
) -> tuple[aiomqtt.MqttError, LibraryWarning | None]:
    """One connection attempt the way the link makes it; the error and paho's last warning."""
    relay = PahoLogRelay(structlog.wrap_logger(None, processors=[LogCapture()]))
    client = build_client(s, logger=relay.logger(), timeout=timeout)
    with pytest.raises(aiomqtt.MqttError) as info:
        async with client:
            pass
    return info.value, relay.last


# -- refused and unreachable ---------------------------------------------------------------


async def test_a_closed_port_is_unreachable() -> None:
    exc, last = await failure(settings("127.0.0.1", free_port()))
    assert isinstance(exc.__context__, ConnectionRefusedError)  # what aiomqtt raised "from None"
    cause, message = describe_error(exc, last)
    assert cause == "unreachable"
    assert message.startswith("broker not reachable: ") and "Connection refused" in message


async def test_an_unknown_host_is_unreachable() -> None:
    exc, last = await failure(settings("no-such-host.invalid", 1883))
    assert isinstance(exc.__context__, socket.gaierror)
    assert describe_error(exc, last)[0] == "unreachable"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_wrong_password_is_refused_as_auth_by_its_code(
    mosquitto_factory: Callable[..., MosquittoBroker], protocol: str
) -> None:
    broker = mosquitto_factory(passwords={"edge": "right"})
    s = settings(broker.host, broker.port, protocol=protocol, username="edge", password="wr0ng")
    exc, last = await failure(s)
    assert isinstance(exc, MqttConnectError)
    assert isinstance(exc.rc, ReasonCode) and exc.rc.value == 0x87  # paho maps 3.1.1's 5 too
    cause, message = describe_error(exc, last)
    assert cause == "auth"
    assert message == "broker refused the login (Not authorized): check mqtt.username/password"
    assert "wr0ng" not in message


async def test_an_anonymous_client_on_a_password_broker_is_refused_as_auth(
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    broker = mosquitto_factory(passwords={"edge": "right"})
    exc, last = await failure(settings(broker.host, broker.port))
    assert describe_error(exc, last)[0] == "auth"


@pytest.mark.parametrize(
    ("rc", "cause", "reason"),
    [
        (4, "auth", "(Connection Refused: bad user name or password.)"),  # 3.1.1 codes
        (5, "auth", "(Connection Refused: not authorised.)"),
        (3, "refused", "(Connection Refused: broker unavailable.)"),
        (ReasonCode(PacketTypes.CONNACK, identifier=0x86), "auth", "Bad user name or password"),
        (ReasonCode(PacketTypes.CONNACK, identifier=0x84), "refused", "Unsupported protocol"),
        (ReasonCode(PacketTypes.CONNACK, identifier=0x89), "refused", "Server busy"),
    ],
)
def test_connack_codes_no_mosquitto_here_sends(
    rc: int | ReasonCode, cause: str, reason: str
) -> None:
    got, message = describe_error(MqttConnectError(rc))
    assert got == cause
    assert reason in message


# -- TLS -----------------------------------------------------------------------------------


async def test_a_certificate_from_another_ca_fails_verification(
    mosquitto_factory: Callable[..., MosquittoBroker], mqtt_pki: Pki
) -> None:
    broker = mosquitto_factory(tls=mqtt_pki)
    tls = {"enabled": True, "ca_file": mqtt_pki.other_ca_cert}
    exc, last = await failure(settings(broker.host, broker.port, tls=tls))
    origin = exc.__context__
    assert isinstance(origin, ssl.SSLCertVerificationError)
    assert origin.verify_code == 19  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    cause, message = describe_error(exc, last)
    assert cause == "tls"
    assert message.startswith("TLS handshake failed: ") and "certificate verify failed" in message
    assert message.endswith("(check mqtt.tls.ca_file and the broker's certificate and host name)")


async def test_a_host_name_the_certificate_does_not_name_fails_verification(
    mosquitto_factory: Callable[..., MosquittoBroker], mqtt_pki: Pki
) -> None:
    broker = mosquitto_factory(tls=mqtt_pki)
    tls = {"enabled": True, "ca_file": mqtt_pki.ca_cert}
    s = settings("127.1", broker.port, tls=tls)  # 127.0.0.1, but not a name the cert has
    exc, last = await failure(s)
    assert isinstance(exc.__context__, ssl.SSLCertVerificationError)
    assert exc.__context__.verify_code == 62  # X509_V_ERR_HOSTNAME_MISMATCH
    cause, message = describe_error(exc, last)
    assert cause == "tls" and "mqtt.tls.ca_file" in message


async def test_a_missing_client_certificate_is_named(
    mosquitto_factory: Callable[..., MosquittoBroker], mqtt_pki: Pki
) -> None:
    # TLS 1.3: the handshake completes, the broker's alert arrives on the first read, paho
    # logs it and aiomqtt waits for a CONNACK that never comes.
    broker = mosquitto_factory(tls=mqtt_pki, require_certificate=True)
    tls = {"enabled": True, "ca_file": mqtt_pki.ca_cert}
    exc, last = await failure(settings(broker.host, broker.port, tls=tls), timeout=0.5)
    assert isinstance(exc.__context__, TimeoutError)
    assert last is not None and isinstance(last.error, ssl.SSLError)
    assert last.error.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    cause, message = describe_error(exc, last)
    assert cause == "tls"
    assert message.startswith("TLS connection failed: ") and "certificate required" in message
    assert message.endswith(
        "(the broker wants a client certificate: set mqtt.tls.cert_file and key_file)"
    )


async def test_a_plain_client_on_a_tls_port_times_out_with_the_socket_error(
    mosquitto_factory: Callable[..., MosquittoBroker], mqtt_pki: Pki
) -> None:
    broker = mosquitto_factory(tls=mqtt_pki)
    exc, last = await failure(settings(broker.host, broker.port), timeout=0.5)
    assert isinstance(exc.__context__, TimeoutError)
    assert last is not None and isinstance(last.error, OSError)
    assert not isinstance(last.error, ssl.SSLError)
    cause, message = describe_error(exc, last)
    assert cause == "timeout"
    assert message.startswith("broker did not answer in time: ")
    assert f"(last socket error: {last.message})" in message


@contextlib.asynccontextmanager
async def plain_text_server() -> AsyncIterator[int]:
    """A TCP server that answers anything with plain text, as a non-TLS service would."""

    async def answer(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_tls_to_a_plain_text_port_asks_whether_it_is_a_tls_listener(mqtt_pki: Pki) -> None:
    async with plain_text_server() as port:
        tls = {"enabled": True, "ca_file": mqtt_pki.ca_cert}
        exc, last = await failure(settings("127.0.0.1", port, tls=tls))
    origin = exc.__context__
    assert isinstance(origin, ssl.SSLError)
    assert origin.reason in {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"}  # OpenSSL <3.2, 3.2+
    cause, message = describe_error(exc, last)
    assert cause == "tls" and message.endswith("(is this port a TLS listener?)")


# -- lost connections, settings, and text that must not decide -----------------------------


async def test_the_end_of_message_iteration_is_a_lost_connection(
    mosquitto: MosquittoBroker,
) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe("t/#")
        mosquitto.kill()
        with pytest.raises(aiomqtt.MqttError) as info:
            await asyncio.wait_for(anext(aiter(client.messages)), 10)
    assert info.value.__cause__ is not None  # raised *from* the disconnect
    cause, message = describe_error(info.value)
    assert cause == "connection_lost" and message.startswith("connection lost: ")
    assert describe_error(aiomqtt.MqttError("x"), while_connected=True)[0] == "connection_lost"


async def test_an_unreadable_file_is_a_config_problem(mqtt_pki: Pki) -> None:
    s = settings("127.0.0.1", 1883, tls={"enabled": True, "ca_file": "/nonexistent/ca.pem"})
    with pytest.raises(OSError) as info:
        build_client(s)
    cause, message = describe_error(info.value)
    assert cause == "config" and message.startswith("cannot prepare the connection: ")


@pytest.mark.parametrize(
    "text",
    [
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
        "Connection refused",
        "Operation timed out",
        "Disconnected during message iteration",
    ],
)
def test_the_text_of_an_error_decides_nothing(text: str) -> None:
    """An MqttError that only *says* TLS, refused, timed out or disconnected is an "error"."""
    assert describe_error(aiomqtt.MqttError(text)) == ("error", text)


def test_every_cause_is_listed() -> None:
    assert set(CAUSES) == {
        "auth", "refused", "tls", "unreachable", "timeout", "connection_lost", "config", "error",
    }  # fmt: skip


# -- SUBACK ----------------------------------------------------------------------------------


def test_subscription_refusal_by_suback_code() -> None:
    assert subscription_refused(ReasonCode(PacketTypes.SUBACK, identifier=0x87))
    assert not subscription_refused(ReasonCode(PacketTypes.SUBACK, identifier=1))
    assert subscription_refused(0x80) and not subscription_refused(1)
