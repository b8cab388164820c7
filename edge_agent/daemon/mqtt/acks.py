"""Acknowledged publishing: a QoS 1 PUBLISH is delivered only if its PUBACK says so.

aiomqtt 2.x completes ``Client.publish`` on any PUBACK and drops the reason code, so on
MQTT 5 a broker that refuses an alert (Mosquitto answers ``0x87 Not authorized`` for a topic
its ACL denies) looked delivered: the outbox deleted the alert, silently lost. Here the
PUBLISH goes to paho directly and its PUBACK's reason code decides; a refusal leaves the
alert in the outbox and is logged (at most once a minute per topic and reason, with how
many since). MQTT 3.1.1 has no such code: a 3.1.1 broker that drops a denied message says
nothing, which only the broker's own log shows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from structlog.typing import FilteringBoundLogger

#: A refusal of the same topic for the same reason is logged at most this often.
REFUSAL_LOG_SECONDS = 60.0


class PublishRefused(Exception):
    """The broker answered a PUBLISH with a failure reason code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (0x{code:02x})")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PendingAck:
    """A PUBLISH handed to paho whose PUBACK is awaited."""

    mid: int
    topic: str
    future: asyncio.Future[tuple[int, str]]


class Acks:
    """Watches PUBACKs of one client's QoS 1 publishes; delegates the rest to aiomqtt."""

    def __init__(self, client: aiomqtt.Client, log: FilteringBoundLogger) -> None:
        self._paho = client._client
        self._aiomqtt_on_publish: Any = self._paho.on_publish
        self._waiting: dict[int, asyncio.Future[tuple[int, str]]] = {}
        self._log = log
        self._logged: dict[tuple[str, int], tuple[float, int]] = {}
        self._paho.on_publish = self._on_publish

    def send(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties | None,
    ) -> PendingAck:
        """Hand a QoS >= 1 PUBLISH to paho now (queued for the socket when this returns);
        raises ``aiomqtt.MqttCodeError`` when paho cannot send it."""
        info = self._paho.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        future: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._waiting[info.mid] = future
        return PendingAck(info.mid, topic, future)

    async def acknowledged(self, pending: PendingAck) -> None:
        """Wait for the PUBACK of a :meth:`send`; raises :class:`PublishRefused` on a failure
        reason code, ``aiomqtt.MqttError`` if the connection ends first."""
        try:
            code, reason = await pending.future
        finally:
            self._waiting.pop(pending.mid, None)
        if code >= 0x80:
            self._log_refusal(pending.topic, code, reason)
            raise PublishRefused(code, reason)

    def close(self) -> None:
        """The connection ended: the PUBACKs still awaited will not come on this client."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(aiomqtt.MqttError("Disconnected before the PUBACK"))
        self._waiting.clear()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        future = self._waiting.get(mid)
        if future is None:  # aiomqtt's own publishes, and QoS 0 (publish_nowait)
            if self._aiomqtt_on_publish is not None:
                self._aiomqtt_on_publish(client, userdata, mid, rc, props)
            return
        if not future.done():
            code = int(getattr(rc, "value", rc) or 0)
            future.set_result((code, str(rc)))

    def _log_refusal(self, topic: str, code: int, reason: str) -> None:
        now = time.monotonic()
        key = (topic, code)
        last, since = self._logged.get(key, (-REFUSAL_LOG_SECONDS, 0))
        if now - last < REFUSAL_LOG_SECONDS:
            self._logged[key] = (last, since + 1)
            return
        self._logged[key] = (now, 0)
        self._log.error(
            "mqtt_publish_refused",
            topic=topic,
            reason=reason,
            code=code,
            refused_since_last_line=since,
            effect="the message stays in the outbox and is retried; check the broker's ACL",
        )
