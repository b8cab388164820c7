"""MQTT 5 properties: the plain :class:`MessageProperties` callers use, and paho's from them.

paho's ``Properties`` never leave this package: callers describe a message with
:class:`~edge_agent.daemon.mqtt.transport.MessageProperties`, and the link converts it here
just before publishing. The CONNECT properties (the session expiry) and the SUBSCRIBE
options are built here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .transport import MessageProperties

#: MessageExpiryInterval is a four-byte integer on the wire.
_FOUR_BYTE_MAX = 2**32 - 1


def alert_properties(alert_id: str, model_version: str, expiry_s: int) -> MessageProperties:
    """MQTT 5 PUBLISH properties of an alert: expiry and ids a consumer can route on."""
    return MessageProperties(
        content_type="application/json",
        message_expiry=int(expiry_s) if expiry_s > 0 else None,
        user_properties={"alert_id": alert_id, "model_set_version": model_version},
    )


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho is untyped here


def publish_properties(props: MessageProperties) -> Properties:
    """paho PUBLISH properties for ``props``.

    Raises ``ValueError`` for an expiry that does not fit the wire format (paho would only
    fail later, with a ``struct.error`` from inside the publish call).
    """
    out = _properties(PacketTypes.PUBLISH)
    if props.content_type is not None:
        out.ContentType = props.content_type
    if props.message_expiry:
        if not 0 < props.message_expiry <= _FOUR_BYTE_MAX:
            raise ValueError(f"message_expiry {props.message_expiry} is not 0..{_FOUR_BYTE_MAX}")
        out.MessageExpiryInterval = int(props.message_expiry)
    if props.user_properties:
        out.UserProperty = [(str(k), str(v)) for k, v in props.user_properties.items()]
    return out


def connect_properties(session_expiry_s: int) -> Properties:
    """MQTT 5 CONNECT properties that keep the session after a disconnect.

    Without a SessionExpiryInterval an MQTT 5 session ends at disconnect, and the readings
    the broker would have queued for the agent are lost.
    """
    out = _properties(PacketTypes.CONNECT)
    out.SessionExpiryInterval = session_expiry_s
    return out


def subscribe_requests(topics: Sequence[str], qos: int, *, v5: bool) -> list[tuple[str, Any]]:
    """The argument of ``aiomqtt.Client.subscribe`` for ``topics`` at ``qos``."""
    if v5:
        return [(t, SubscribeOptions(qos=qos)) for t in topics]
    return [(t, qos) for t in topics]
