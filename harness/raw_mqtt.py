"""MQTT 3.1.1 packets written by hand, and a connection on a bare socket.

For what a library client would not do: a load generator that writes every message due in a
millisecond with one ``sendall``, a subscriber that never reads, a flood of malformed or
oversized publishes. The caller controls every byte and every read (paho would read and
acknowledge behind its back).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence

from harness.net import HOST

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, DISCONNECT = 1, 2, 3, 4, 8, 9, 14

#: A DISCONNECT packet.
DISCONNECT_PACKET = b"\xe0\x00"


def varint(n: int) -> bytes:
    """The MQTT "remaining length" encoding of ``n``."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(s: bytes) -> bytes:
    """A length-prefixed MQTT string."""
    return struct.pack("!H", len(s)) + s


def connect_packet(client_id: str, keepalive: int = 0, *, clean_session: bool = True) -> bytes:
    flags = 0x02 if clean_session else 0x00
    body = (
        mqtt_string(b"MQTT")
        + bytes([4, flags])
        + struct.pack("!H", keepalive)
        + mqtt_string(client_id.encode())
    )
    return b"\x10" + varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    """A PUBLISH at QoS 0, or at QoS 1 with ``packet_id``."""
    if qos:
        body = mqtt_string(topic) + struct.pack("!H", packet_id) + payload
        return b"\x32" + varint(len(body)) + body
    body = mqtt_string(topic) + payload
    return b"\x30" + varint(len(body)) + body


def subscribe_packet(filters: Iterable[tuple[str, int]], packet_id: int = 1) -> bytes:
    """A SUBSCRIBE of (topic filter, QoS) pairs."""
    body = struct.pack("!H", packet_id) + b"".join(
        mqtt_string(t.encode()) + bytes([q]) for t, q in filters
    )
    return b"\x82" + varint(len(body)) + body


def puback_packet(packet_id: bytes) -> bytes:
    """A PUBACK for the two packet-id bytes of a QoS 1 delivery."""
    return b"\x40\x02" + packet_id


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def raw_connect(
    port: int,
    client_id: str,
    *,
    host: str = HOST,
    keepalive: int = 60,
    clean_session: bool = True,
    sockopts: Sequence[tuple[int, int, int]] = (),
    timeout: float | None = None,
) -> socket.socket:
    """A connected socket after a successful CONNACK.

    ``sockopts`` are ``setsockopt`` (level, option, value) triples applied before connecting
    (receive/send buffer sizes, TCP_NODELAY); ``timeout`` is the socket's timeout.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for level, option, value in sockopts:
            sock.setsockopt(level, option, value)
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(connect_packet(client_id, keepalive, clean_session=clean_session))
        ack = read_exactly(sock, 4)
        if ack[:2] != b"\x20\x02" or ack[3] != 0:
            raise ConnectionError(f"CONNACK refused {ack!r}")
    except BaseException:
        sock.close()
        raise
    return sock
