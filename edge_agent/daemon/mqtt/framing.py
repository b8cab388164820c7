"""MQTT packets cut out of a byte stream, and the PUBLISH packets the agent decodes itself.

A pure protocol core (no I/O, no paho), like h11: bytes in, events out. The direct receive
path (:mod:`.direct`) reads the socket in large chunks and feeds them here, because paho
reads every packet with three or more ``recv`` calls and builds an ``MQTTMessage`` (and on
MQTT 5 a ``Properties`` object) per message: 19 µs (3.1.1) / 40 µs (5) a message against
about 1 µs here (measured on this project's 2-core box, small sensor messages).

Only what the agent consumes is decoded: a QoS 0 or 1 PUBLISH whose topic is valid UTF-8
and which carries no topic alias (``Publish``). Every other packet (CONNACK, SUBACK,
PUBACK, PINGRESP, QoS 2, an aliased or otherwise unusual PUBLISH) comes out whole as a
``Packet`` for paho to handle, so connection management stays paho's.
"""

from __future__ import annotations

from typing import NamedTuple

#: The PUBLISH packet type (high nibble of the fixed header's first byte).
PUBLISH = 0x30

#: MQTT 5 property identifiers by the size of their value ("s": UTF-8 string or binary
#: data, two-byte length; "p": a string pair; "v": variable byte integer).
_PROPERTY_SIZES: dict[int, int | str] = {
    0x01: 1, 0x02: 4, 0x03: "s", 0x08: "s", 0x09: "s", 0x0B: "v", 0x11: 4, 0x12: "s",
    0x13: 2, 0x15: "s", 0x16: "s", 0x17: 1, 0x18: 4, 0x19: 1, 0x1A: "s", 0x1C: "s",
    0x1F: "s", 0x21: 2, 0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: "p", 0x27: 4, 0x28: 1,
    0x29: 1, 0x2A: 1,
}  # fmt: skip
_TOPIC_ALIAS = 0x23


class MalformedStream(ValueError):
    """The bytes are not MQTT (a remaining length longer than four bytes)."""


class Publish(NamedTuple):
    """A PUBLISH the agent takes itself. ``mid`` is the packet id (0 for QoS 0)."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    mid: int


class Packet(NamedTuple):
    """Any other packet, whole: the fixed header's first byte and the rest after the length."""

    command: int
    body: bytes


def _varint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """(value, position after it) of a variable byte integer, None if it runs past ``end``."""
    value = 0
    shift = 0
    for i in range(pos, min(end, pos + 4)):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    if end - pos >= 4:
        raise MalformedStream("variable byte integer longer than four bytes")
    return None


def _properties_allow_fast_path(buf: bytes, pos: int, end: int) -> bool:
    """True if the MQTT 5 properties in ``buf[pos:end]`` are all known and none is an alias."""
    while pos < end:
        ident = buf[pos]
        pos += 1
        size = _PROPERTY_SIZES.get(ident)
        if size is None or ident == _TOPIC_ALIAS:
            return False
        if type(size) is int:
            pos += size
        elif size == "v":
            got = _varint(buf, pos, end)
            if got is None:
                return False
            pos = got[1]
        else:
            for _ in range(2 if size == "p" else 1):
                if pos + 2 > end:
                    return False
                pos += 2 + ((buf[pos] << 8) | buf[pos + 1])
    return pos == end


def decode_publish(command: int, body: bytes, mqtt5: bool) -> Publish | None:
    """The PUBLISH in ``body`` if the agent can take it itself, else None (paho's job)."""
    qos = (command >> 1) & 3
    if qos > 1 or len(body) < 2:
        return None
    end = len(body)
    topic_end = 2 + ((body[0] << 8) | body[1])
    pos = topic_end
    mid = 0
    if qos:
        if pos + 2 > end:
            return None
        mid = (body[pos] << 8) | body[pos + 1]
        pos += 2
    if mqtt5:
        if pos >= end:
            return None
        if body[pos] == 0:  # the usual case: no properties
            pos += 1
        else:
            got = _varint(body, pos, end)
            if got is None:
                return None
            length, start = got
            pos = start + length
            if pos > end or not _properties_allow_fast_path(body, start, pos):
                return None
    if pos > end or topic_end == 2:
        return None  # truncated, or an empty topic (only valid with an alias)
    try:
        topic = body[2:topic_end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return Publish(topic, body[pos:], bool(command & 1), qos, mid)


class Framer:
    """Cuts a byte stream into packets; ``feed`` returns what the new bytes completed."""

    def __init__(self, mqtt5: bool) -> None:
        self.mqtt5 = mqtt5
        self._buffer = b""

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet kept for the next ``feed``."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Publish | Packet]:
        buf = self._buffer + data if self._buffer else data
        n = len(buf)
        pos = 0
        events: list[Publish | Packet] = []
        mqtt5 = self.mqtt5
        while n - pos >= 2:
            command = buf[pos]
            length = buf[pos + 1]
            start = pos + 2
            if length & 0x80:
                got = _varint(buf, pos + 1, n)
                if got is None:
                    break
                length, start = got
            end = start + length
            if end > n:
                break
            body = buf[start:end]
            event = decode_publish(command, body, mqtt5) if command & 0xF0 == PUBLISH else None
            events.append(event if event is not None else Packet(command, body))
            pos = end
        self._buffer = buf[pos:] if pos < n else b""
        return events
