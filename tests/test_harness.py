"""The shared harness's own parsing and encoding, checked against the libraries it mirrors."""

from __future__ import annotations

from prometheus_client import generate_latest

from edge_agent.metrics import Metrics
from harness.metrics import MetricsSnapshot
from harness.raw_mqtt import connect_packet, publish_packet, subscribe_packet, varint


def test_metrics_parsing_matches_prometheus_client() -> None:
    m = Metrics()
    m.messages_received.inc(7)
    m.messages_rejected.labels("bad_json").inc(2)
    m.messages_rejected.labels("too_large").inc(1)
    for v in (0.004, 0.004, 0.015, 0.3):
        m.reading_to_score_seconds.observe(v)
    snap = MetricsSnapshot.parse(generate_latest(m.registry).decode())
    assert snap.value("edge_agent_messages_received") == 7
    assert snap.by_label("edge_agent_messages_rejected", "reason") == {
        "bad_json": 2,
        "too_large": 1,
    }
    # value() sums over the labels not given; exact() wants the whole label set
    assert snap.value("edge_agent_messages_rejected") == 3
    assert snap.exact("edge_agent_messages_rejected", reason="bad_json") == 2
    assert snap.exact("edge_agent_messages_rejected") == 0
    assert snap.as_dict()[("edge_agent_messages_rejected_total", (("reason", "bad_json"),))] == 2
    h = snap.histogram("edge_agent_reading_to_score_seconds")
    assert h.count == 4
    assert h.quantile(0.5) == 0.005 and h.quantile(0.99) == 0.5 and h.max_bound() == 0.5


def test_raw_packets_are_mqtt_3_1_1() -> None:
    assert [varint(n) for n in (0, 127, 128, 16_383, 16_384)] == [
        b"\x00",
        b"\x7f",
        b"\x80\x01",
        b"\xff\x7f",
        b"\x80\x80\x01",
    ]
    assert publish_packet(b"a/b", b"xy") == b"\x30\x07\x00\x03a/bxy"
    assert publish_packet(b"a/b", b"xy", 1, 258) == b"\x32\x09\x00\x03a/b\x01\x02xy"
    assert connect_packet("c", 60) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c"
    assert connect_packet("c", clean_session=False)[9] == 0x00
    assert subscribe_packet([("a/#", 1), ("b", 0)], 7) == (
        b"\x82\x0c\x00\x07\x00\x03a/#\x01\x00\x01b\x00"
    )
