"""The MQTT framer (edge_agent/daemon/mqtt/framing.py): pure, so tested on bytes alone.

paho's own encoder and decoder are the reference: packets built by paho come out of the
framer with the topic, payload, QoS, retain flag and packet id paho decodes, however the
stream is cut.
"""

from __future__ import annotations

import random
import struct

import pytest
from paho.mqtt import _packet as paho_packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.daemon.mqtt.framing import Framer, MalformedStream, Packet, Publish, decode_publish


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(
    topic: bytes,
    payload: bytes,
    *,
    qos: int = 0,
    retain: bool = False,
    mid: int = 0,
    properties: bytes | None = None,
) -> bytes:
    """A PUBLISH packet; ``properties`` given = MQTT 5 (the packed property block)."""
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    if properties is not None:
        body += properties
    body += payload
    return bytes([0x30 | qos << 1 | int(retain)]) + varint(len(body)) + body


def props(**values: object) -> bytes:
    p = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(p, name, value)
    packed: bytes = p.pack()
    return packed


CONNACK = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"


def test_publish_packets_decode_as_paho_decodes_them() -> None:
    rng = random.Random(7)
    cases = []
    for i in range(300):
        mqtt5 = i % 2 == 1
        qos = rng.choice((0, 1))
        topic = f"plant/p1/unit-{rng.randrange(1000)}/sensors/s{i}".encode()
        payload = rng.randbytes(rng.choice((0, 5, 60, 127, 128, 300, 20000)))
        properties = None
        if mqtt5:
            properties = rng.choice(
                (
                    b"\x00",
                    props(ContentType="application/json"),
                    props(UserProperty=[("site", "a"), ("k", "v" * 200)], PayloadFormatIndicator=1),
                    props(MessageExpiryInterval=60, CorrelationData=b"\x01", ResponseTopic="r/t"),
                    props(SubscriptionIdentifier=[300]),
                )
            )
        packet = publish_packet(
            topic, payload, qos=qos, retain=bool(i % 3 == 0), mid=i + 1 if qos else 0,
            properties=properties,
        )  # fmt: skip
        cases.append((packet, mqtt5))
    for packet, mqtt5 in cases:
        (event,) = Framer(mqtt5).feed(packet)
        assert type(event) is Publish
        header = 2 if packet[1] < 0x80 else (3 if packet[2] < 0x80 else 4)
        expected = paho_packet.decode_publish(packet[0], packet[header:], 5 if mqtt5 else 4)
        assert event.topic == expected.topic.decode()
        assert event.payload == expected.payload
        assert (event.qos, event.retain, event.mid) == (expected.qos, expected.retain, expected.mid)


def test_however_the_stream_is_cut_the_same_events_come_out() -> None:
    stream = b"".join(
        [
            CONNACK,
            publish_packet(b"a/b", b"1"),
            publish_packet(b"a/c", b"x" * 200, qos=1, mid=9),  # two-byte remaining length
            PINGRESP,
            publish_packet(b"a/d", b"y" * 20000, retain=True),  # three-byte remaining length
            publish_packet(b"a/e", b""),
        ]
    )
    whole = Framer(False).feed(stream)
    assert [type(e).__name__ for e in whole] == [
        "Packet", "Publish", "Publish", "Packet", "Publish", "Publish",
    ]  # fmt: skip
    assert whole[0] == Packet(0x20, b"\x00\x00") and whole[3] == Packet(0xD0, b"")
    rng = random.Random(3)
    for _ in range(200):
        framer = Framer(False)
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randrange(1, 12)))
        events = []
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            events += framer.feed(stream[a:b])
        assert events == whole
        assert framer.buffered == 0
    byte_by_byte = Framer(False)
    assert [e for i in range(len(stream)) for e in byte_by_byte.feed(stream[i : i + 1])] == whole


def test_an_incomplete_packet_waits_for_its_bytes() -> None:
    packet = publish_packet(b"a/b", b"z" * 1000)
    framer = Framer(False)
    assert framer.feed(packet[:1]) == [] and framer.feed(packet[1:2]) == []
    assert framer.feed(packet[2:-1]) == [] and framer.buffered == len(packet) - 1
    assert framer.feed(packet[-1:]) == [Publish("a/b", b"z" * 1000, False, 0, 0)]


@pytest.mark.parametrize(
    ("packet", "mqtt5", "why"),
    [
        (publish_packet(b"a/b", b"1", qos=2, mid=4), False, "QoS 2 needs paho's PUBREC/PUBREL"),
        (publish_packet(b"", b"1", properties=props(TopicAlias=3)), True, "alias, no topic"),
        (publish_packet(b"a/b", b"1", properties=props(TopicAlias=3)), True, "sets an alias"),
        (publish_packet(b"a/\xff", b"1"), False, "topic is not UTF-8"),
        (publish_packet(b"", b"1"), False, "empty topic"),
        (b"\x30\x03\x00\x05a", False, "topic longer than the packet"),
        (b"\x30\x05\x00\x01a\x07\x00", True, "property block longer than the packet"),
        (b"\x30\x06\x00\x01a\x02\x7f\x00", True, "unknown property id"),
    ],
)
def test_what_the_agent_does_not_decode_goes_to_paho_whole(
    packet: bytes, mqtt5: bool, why: str
) -> None:
    events = Framer(mqtt5).feed(packet)
    assert events == [Packet(packet[0], packet[2:])], why


def test_an_mqtt5_publish_read_as_311_keeps_the_property_bytes_in_the_payload() -> None:
    """The framer follows the connection's protocol (a regression check on the flag)."""
    packet = publish_packet(b"a/b", b"v", properties=b"\x00")
    assert Framer(False).feed(packet) == [Publish("a/b", b"\x00v", False, 0, 0)]
    assert Framer(True).feed(packet) == [Publish("a/b", b"v", False, 0, 0)]


def test_a_remaining_length_over_four_bytes_is_malformed() -> None:
    with pytest.raises(MalformedStream):
        Framer(False).feed(b"\x30\xff\xff\xff\xff\x01")


def test_decode_publish_takes_the_body_after_the_fixed_header() -> None:
    body = b"\x00\x01t\x00\x2a" + b"p"  # topic "t", packet id 42, payload "p"
    assert decode_publish(0x33, body, False) == Publish("t", b"p", True, 1, 42)
