"""MQTT 5 properties from plain values (edge_agent/daemon/mqtt/properties.py).

The conversion's result is checked on the wire too: published by a plain aiomqtt client to a
real Mosquitto and read back by a subscriber. The link's own use of it (and MQTT 3.1.1
leaving properties out) is in tests/test_mqtt_transport.py.
"""

from __future__ import annotations

import asyncio
import uuid

import aiomqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.daemon.mqtt import MessageProperties, alert_properties
from edge_agent.daemon.mqtt.properties import (
    connect_properties,
    publish_properties,
    subscribe_requests,
)
from harness.broker import MosquittoBroker


def test_alert_properties_are_plain_values() -> None:
    props = alert_properties("alert-1", "ms-7", expiry_s=600)
    assert props == MessageProperties(
        content_type="application/json",
        message_expiry=600,
        user_properties={"alert_id": "alert-1", "model_set_version": "ms-7"},
    )
    assert alert_properties("a", "m", expiry_s=0).message_expiry is None  # 0: never expires


def test_publish_properties_sets_only_what_is_given() -> None:
    paho = publish_properties(alert_properties("alert-1", "ms-7", expiry_s=600))
    assert paho.ContentType == "application/json"
    assert paho.MessageExpiryInterval == 600
    assert paho.UserProperty == [("alert_id", "alert-1"), ("model_set_version", "ms-7")]
    empty = publish_properties(MessageProperties())
    assert empty.pack() == b"\x00"  # no property at all on the wire


@pytest.mark.parametrize("expiry", [2**32, -1])
def test_an_expiry_that_does_not_fit_the_wire_is_refused(expiry: int) -> None:
    with pytest.raises(ValueError, match="message_expiry"):
        publish_properties(MessageProperties(message_expiry=expiry))


def test_connect_properties_keep_the_session() -> None:
    assert connect_properties(3600).SessionExpiryInterval == 3600


def test_subscribe_requests_per_protocol() -> None:
    v5 = subscribe_requests(["a/+", "b/#"], 1, v5=True)
    assert [t for t, _ in v5] == ["a/+", "b/#"]
    assert all(isinstance(o, SubscribeOptions) and o.QoS == 1 for _, o in v5)
    assert subscribe_requests(["a/+"], 0, v5=False) == [("a/+", 0)]


async def test_the_properties_reach_an_mqtt5_subscriber(mosquitto: MosquittoBroker) -> None:
    v5 = aiomqtt.ProtocolVersion.V5
    props = alert_properties("alert-9", "ms-3", expiry_s=120)
    async with (
        aiomqtt.Client(mosquitto.host, mosquitto.port, protocol=v5) as sub,
        aiomqtt.Client(mosquitto.host, mosquitto.port, protocol=v5) as pub,
    ):
        topic = f"t/{uuid.uuid4().hex}"
        await sub.subscribe(topic, qos=1)
        await pub.publish(topic, b"{}", qos=1, properties=publish_properties(props))
        msg = await asyncio.wait_for(anext(aiter(sub.messages)), 5)
    assert msg.properties is not None
    assert msg.properties.ContentType == "application/json"
    assert dict(msg.properties.UserProperty) == {"alert_id": "alert-9", "model_set_version": "ms-3"}
    assert 110 <= msg.properties.MessageExpiryInterval <= 120
