"""A synchronous paho MQTT client for tests and benchmarks: publish, and collect deliveries."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from harness.net import HOST


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    received: float

    def json(self) -> Any:
        return orjson.loads(self.payload)


class MqttClient:
    """Synchronous paho client for tests: publish, and collect messages from subscriptions."""

    def __init__(
        self,
        port: int,
        client_id: str = "",
        *,
        protocol: int = MQTTProtocolVersion.MQTTv5,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.messages: queue.Queue[Message] = queue.Queue()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion(protocol),
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.connect(HOST, port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        self.messages.put(Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))

    def subscribe(self, *topics: str, qos: int = 1) -> MqttClient:
        for t in topics:
            info = self.client.subscribe(t, qos=qos)
            assert info[0] == 0, info
        time.sleep(0.2)  # let SUBACK arrive before the scenario starts
        return self

    def publish(
        self, topic: str, payload: bytes | str | float, qos: int = 1, retain: bool = False
    ) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(timeout=10)

    def collect(
        self, until: Any = None, timeout: float = 10.0, topic_prefix: str = ""
    ) -> list[Message]:
        """Messages received until ``until(collected)`` is true or ``timeout`` passes."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                m = self.messages.get(timeout=0.05)
            except queue.Empty:
                if until is not None and until(got):
                    break
                continue
            if m.topic.startswith(topic_prefix):
                got.append(m)
            if until is not None and until(got):
                break
        return got

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
