"""One ``send`` for all that paho has queued (edge_agent/daemon/mqtt/writes.py): the same
bytes as paho's own writer, through a socket too small for them, and against a real
Mosquitto with a real subscriber."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_mqtt_transport import RunningLink, agent_settings, eventually

from edge_agent.daemon.mqtt import tcp, writes
from harness.broker import MosquittoBroker
from harness.mqtt_client import MqttClient
from harness.pki import Pki

SMALL_BUFFER = 4096


@pytest.fixture
def small_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A TCP connection whose buffers hold a few KB: sends come back short or refused."""
    server = socket.create_server(("127.0.0.1", 0))
    a = socket.socket()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    a.connect(server.getsockname())
    b, _ = server.accept()
    server.close()
    a.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


class Sends:
    """Counts a client's ``send`` calls, those the socket took only in part and those it
    refused (full)."""

    def __init__(self, client: paho.Client) -> None:
        self.calls = 0
        self.short = 0
        self.refused = 0
        self.largest = 0
        own: Callable[[bytes], int] = client._sock_send

        def send(data: bytes) -> int:
            self.calls += 1
            self.largest = max(self.largest, len(data))
            try:
                n = own(data)
            except BlockingIOError:
                self.refused += 1
                raise
            self.short += n < len(data)
            return n

        client._sock_send = send  # type: ignore[method-assign]


def paho_client(sock: socket.socket, batched: bool) -> tuple[paho.Client, list[int]]:
    """A paho client writing to ``sock`` as if connected; the mids of its ``on_publish``."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    published: list[int] = []
    client.on_publish = lambda c, u, mid, rc, props: published.append(mid)
    client._sock = sock
    if batched:
        assert writes.install(client)
    return client, published


def publish_mix(client: paho.Client) -> list[paho.MQTTMessageInfo]:
    """300 PUBLISHes of 10 B to 3 KB, QoS 0 and 1, some with MQTT 5 properties."""
    infos = []
    for i in range(300):
        props = None
        if i % 7 == 0:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("n", str(i))]
        infos.append(
            client.publish(f"plant/p1/u{i % 13}/scores", b"x" * (10 + (i * 97) % 3000),
                           qos=1 if i % 5 == 0 else 0, properties=props)
        )  # fmt: skip
    return infos


def drain(client: paho.Client, reader: socket.socket) -> bytes:
    """Read everything the client writes, letting it write whenever there is room."""
    got = bytearray()
    reader.settimeout(0.2)
    while True:
        client.loop_write()
        try:
            chunk = reader.recv(65536)
        except TimeoutError:
            if not client.want_write():
                return bytes(got)
            continue
        got += chunk


def test_the_bytes_are_paho_own_through_a_socket_too_small_for_them(
    small_pair: tuple[socket.socket, socket.socket],
) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(server.getsockname())
    d, _ = server.accept()
    server.close()
    c.setblocking(False)
    try:
        own, own_published = paho_client(c, batched=False)
        publish_mix(own)
        expected = drain(own, d)
    finally:
        c.close()
        d.close()

    a, b = small_pair
    client, published = paho_client(a, batched=True)
    sends = Sends(client)
    infos = publish_mix(client)
    got = drain(client, b)

    assert len(expected) > 300_000
    assert got == expected
    assert sends.short > 0  # the socket did take sends in part: that path ran
    assert sends.largest > 3100  # and queued packets went out joined (each is < 3.1 KB)
    # on_publish once per QoS 0 PUBLISH, in order, as paho's writer calls it (QoS 1 waits
    # for a PUBACK that never comes here); each QoS 0 message marked published
    qos0 = [info for i, info in enumerate(infos) if i % 5 != 0]
    assert published == own_published == [info.mid for info in qos0]
    assert all(info.is_published() for info in qos0)
    assert not client.want_write() and not client._out_packet


def test_a_paho_without_the_internals_keeps_its_own_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    monkeypatch.setattr(writes, "PAHO_INTERNALS", (*writes.PAHO_INTERNALS, "_no_such_thing"))
    assert not writes.install(client)
    assert client._packet_write.__func__ is paho.Client._packet_write  # type: ignore[attr-defined]
    v1 = paho.Client(CallbackAPIVersion.VERSION1)  # on_publish takes other arguments there
    monkeypatch.undo()
    assert not writes.install(v1)


async def test_a_burst_of_scores_reaches_a_subscriber_whole_and_in_order(
    mosquitto: MosquittoBroker,
) -> None:
    """500 QoS 0 scores and a QoS 1 alert in between, handed over in one go: all arrive in
    order, in a handful of sends (paho's writer makes one per packet)."""
    sub = MqttClient(mosquitto.port, "watcher").subscribe("plant/p1/#", qos=1)
    run = RunningLink(agent_settings(mosquitto, receive_path="direct"))
    try:
        async with run:
            assert await run.link.wait_connected(5)
            paho_client_ = run.link._client
            assert paho_client_ is not None
            sends = Sends(paho_client_._client)
            alert: Any = None
            for i in range(500):
                assert run.link.publish_nowait("plant/p1/u1/scores", b'{"n":%d}' % i)
                if i == 250:
                    alert = run.link.start_publish("plant/p1/u1/alerts", b'{"alert":1}')
            assert await alert  # its PUBACK came
            await eventually(lambda: run.link.publish_backlog == 0)
            got = await asyncio.to_thread(
                sub.collect, lambda m: len(m) >= 501, 10.0, "plant/p1/u1/"
            )
            assert sends.calls <= 20
    finally:
        sub.close()
    scores = [m.json()["n"] for m in got if m.topic.endswith("/scores")]
    assert scores == list(range(500))
    topics = [m.topic.rsplit("/", 1)[1] for m in got]
    assert topics.index("alerts") == 251  # queued right after score 250, sent there


async def test_megabytes_over_tls_arrive_whole_and_in_order(
    mosquitto_factory: Callable[..., MosquittoBroker],
    mqtt_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """6 MB handed over at once on a TLS connection with a 4 KB send buffer: the joined
    writes go through the TLS socket's refused sends (a retry starts with the bytes of the
    refused one, as OpenSSL requires). The agent subscribes to its own sensor topics, so it
    reads them back."""
    small = (socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    monkeypatch.setattr(tcp, "SOCKET_OPTIONS", (*tcp.SOCKET_OPTIONS, small))
    broker = mosquitto_factory(tls=mqtt_pki)
    tls = {"enabled": True, "ca_file": mqtt_pki.ca_cert}
    run = RunningLink(agent_settings(broker, tls=tls, receive_path="direct"))
    async with run:
        assert await run.link.wait_connected(5)
        pad = b"x" * 2000
        assert run.link._client is not None
        sends = Sends(run.link._client._client)
        for i in range(3000):
            payload = b'{"value":%d,"pad":"%s"}' % (i, pad)
            assert run.link.publish_nowait("plant/p1/u1/sensors/load", payload)
        await run.wait_received(3000, timeout=30)
        assert run.link.connected
        assert sends.refused + sends.short > 0  # the socket was full: the retry path ran
    values = [int(payload.split(b",")[0].split(b":")[1]) for _, payload, _ in run.received]
    assert values == list(range(3000))
