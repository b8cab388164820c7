"""What the rest of the daemon may ask of its MQTT connection, in plain Python values.

The alert and score publishers, the alarm service and the server talk to a :class:`Transport`
(:class:`~edge_agent.daemon.mqtt.link.MqttLink` is the one implementation). Nothing here
names a paho or aiomqtt type: MQTT 5 properties travel as a :class:`MessageProperties`, and
the link turns them into paho's ``Properties`` at the last moment. A port to another client
library (aiomqtt 3, say) then changes files under ``edge_agent/daemon/mqtt/`` only;
``tests/test_boundaries.py`` fails if a paho or aiomqtt import appears anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: The retained status the agent announces: up, gone without a goodbye (Last Will), stopped.
StatusState = Literal["online", "offline", "stopped"]
#: ``on_message(topic, payload, arrival)``: arrival is the agent's clock when it came in.
MessageCallback = Callable[[str, bytes, float], None]
#: A model set's provenance as published in the status (training run, registry version,
#: training warnings).
ModelTrace = Mapping[str, str | int | list[str] | None]


@dataclass(frozen=True, slots=True)
class MessageProperties:
    """MQTT 5 PUBLISH properties; on MQTT 3.1.1 the link leaves them out silently.

    ``message_expiry`` is seconds (None or 0: never expires); ``user_properties`` are the
    key/value pairs a consumer can route on without parsing the payload.
    """

    content_type: str | None = None
    message_expiry: int | None = None
    user_properties: Mapping[str, str] = field(default_factory=dict)


class Transport(Protocol):
    """One long-lived broker connection: publish, know whether it is up, run and stop."""

    @property
    def connected(self) -> bool:
        """Connected and subscribed; publishes fail fast (False) while this is False."""
        ...

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """True once connected; False if ``timeout`` passes first."""
        ...

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: MessageProperties | None = None,
        timeout: float = 10.0,
    ) -> bool:
        """True once the broker acknowledged; False (never an exception) otherwise."""
        ...

    def start_publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: MessageProperties | None = None,
        timeout: float = 10.0,
    ) -> Coroutine[Any, Any, bool]:
        """``publish`` in two parts: the message is queued for the socket now, and the
        returned coroutine (to be awaited) gives what ``publish`` returns."""
        ...

    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> bool:
        """Queue the message for the socket now, awaiting nothing; False (never an
        exception) when not connected or refused. For QoS 0 messages whose loss is counted."""
        ...

    @property
    def publish_backlog(self) -> int:
        """Outgoing packets queued but not yet written to the socket: back-pressure."""
        ...

    async def use_model_set(self, version: str, trace: ModelTrace | None = None) -> None:
        """Name this model set in status messages from now on."""
        ...

    async def run(self) -> None:
        """Connect, receive and reconnect until :meth:`stop`."""
        ...

    async def stop(self, final_status: bool = True) -> None:
        """Say ``stopped`` (if ``final_status``), disconnect cleanly, end :meth:`run`."""
        ...
