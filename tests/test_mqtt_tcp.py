"""The quick ACK after each read (edge_agent/daemon/mqtt/tcp.py), on real TCP sockets and
against a real Mosquitto.

Linux reports a socket's quick-ACK state through ``getsockopt(TCP_QUICKACK)``: 0 once it
is in pingpong mode (it wrote soon after it read, so its ACKs are delayed), 1 otherwise.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_mqtt_transport import RunningLink, agent_settings, eventually

from edge_agent.daemon.mqtt import direct, tcp
from harness.broker import MosquittoBroker
from harness.mqtt_client import MqttClient

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's"
)


def quick_ack(sock: Any) -> int:
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(server.getsockname())
    b, _ = server.accept()
    server.close()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def exchange(a: socket.socket, b: socket.socket) -> None:
    """``b`` reads and answers at once, as the agent reads readings and writes scores."""
    a.sendall(b"r" * 40)
    time.sleep(0.002)
    assert b.recv(100)
    b.sendall(b"s" * 40)
    assert a.recv(100)


def test_ack_now_takes_a_socket_out_of_delayed_acks(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = tcp_pair
    for _ in range(3):
        exchange(a, b)
    assert quick_ack(b) == 0  # pingpong: the kernel now delays b's ACKs
    tcp.ack_now(b)
    assert quick_ack(b) == 1
    exchange(a, b)
    assert quick_ack(b) == 0  # the next write undoes it: hence once per read


def test_ack_now_leaves_what_it_cannot_set_alone(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = tcp_pair
    a.close()
    tcp.ack_now(a)  # a closed socket: OSError, ignored
    tcp.ack_now(object())  # no setsockopt (a websocket wrapper): ignored
    tcp.ack_now(None)


@pytest.mark.parametrize("framed", [True, False], ids=["framed", "paho-reader"])
@pytest.mark.parametrize("acks", [True, False], ids=["ack_now", "without"])
async def test_the_direct_path_acknowledges_each_read_at_once(
    mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch, framed: bool, acks: bool
) -> None:
    """The agent answers every reading with a score (pingpong); each later reading is read
    with the socket in quick-ACK mode. ``without`` is the control: the same exchange with
    ``ack_now`` disabled finds the socket delaying its ACKs, so the check can fail."""
    if not framed:
        monkeypatch.setattr(direct, "framed_reading_supported", lambda client: False)
    if not acks:
        monkeypatch.setattr(direct, "ack_now", lambda sock: None)
    settings = agent_settings(mosquitto, receive_path="direct")
    run = RunningLink(settings)
    states: list[int] = []

    def record() -> None:
        client = run.link._client
        assert client is not None
        states.append(quick_ack(client._client._sock))

    def on_message(topic: str, payload: bytes, arrival: float) -> None:
        # Looked at once the read is done (paho's reader calls this from inside its read)
        # and before the score below is written (paho writes at the next select).
        asyncio.get_running_loop().call_soon(record)
        assert run.link.publish_nowait("plant/p1/u1/scores", b'{"score":0}')

    run.link.intake.on_message = on_message
    async with run:
        assert await run.link.wait_connected(5)
        publisher = MqttClient(mosquitto.port, "publisher")
        try:
            for i in range(6):
                publisher.publish("plant/p1/u1/sensors/load", str(i).encode(), qos=1)
                await eventually(lambda n=i + 1: len(states) >= n and run.link.publish_backlog == 0)
        finally:
            publisher.close()
    later = states[1:]  # the first reading comes before the agent has written anything
    assert later == ([1] * 5 if acks else [0] * 5)


def no_delay(sock: Any) -> int:
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@pytest.mark.parametrize("receive_path", ["direct", "queue"])
@pytest.mark.parametrize("options", [True, False], ids=["socket_options", "without"])
async def test_the_broker_connection_sends_without_nagle_after_every_connect(
    mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch, receive_path: str, options: bool
) -> None:
    """TCP_NODELAY is on the agent's socket, and again on the new socket after the broker
    drops it. ``without`` is the control: with no options the kernel's default (Nagle on)
    is what the check finds."""
    if not options:
        monkeypatch.setattr(tcp, "SOCKET_OPTIONS", ())
    run = RunningLink(agent_settings(mosquitto, receive_path=receive_path))
    async with run:
        assert await run.link.wait_connected(5)
        first = run.link._client
        assert first is not None
        assert no_delay(first._client._sock) == (1 if options else 0)
        mosquitto.restart()
        await eventually(lambda: run.link._client is not first and run.link.connected, 15)
        again = run.link._client
        assert again is not None
        assert no_delay(again._client._sock) == (1 if options else 0)
