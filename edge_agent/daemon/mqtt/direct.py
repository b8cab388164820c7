"""The direct receive path: paho's ``on_message`` hands each message straight to the agent.

aiomqtt keeps managing the connection (connect, subscribe, publish, keepalive, the
disconnect that ends the session); only delivery changes. On aiomqtt's own path every
message is converted to an ``aiomqtt.Message``, put in a queue and taken out again by an
``async for`` that costs a few loop rounds, and aiomqtt's socket reader hands paho one
packet per wake-up of the event loop. Here paho's callback stamps the arrival and calls the
handler at once, and the reader takes up to :data:`READ_BATCH` packets per wake-up
(``benchmarks/ingest_ceiling.py`` measures both paths on MQTT 3.1.1 and 5).

There is no queue once the link is up, so nothing is dropped as ``queue_full``: the agent
reads the socket only as fast as it handles messages, and the backlog stays in TCP buffers
and the broker. Before that (between CONNACK and the end of subscribing, when a persistent
session already delivers what the broker kept) messages are *held*, as aiomqtt's queue
holds them until the receive loop starts, so their scores are not dropped as
"disconnected"; the hold has the queue's bound, and a message beyond it is counted as
``queue_full``.

This hooks aiomqtt 2.x internals (its paho client ``_client``, its ``_disconnected`` future
and its socket callbacks), as :mod:`.intake` hooks ``queue_type``: ``pyproject.toml`` pins
``aiomqtt<3``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

#: paho packets read per wake-up of the event loop before other tasks get their turn.
READ_BATCH = 64

#: ``on_message(paho_message, arrival)``, called on the loop thread from inside paho's read.
PahoCallback = Callable[[paho.MQTTMessage, float], None]


class DirectReader:
    """Routes one aiomqtt client's incoming messages to ``callback`` without aiomqtt's queue.

    ``install`` must be called before the client connects. The client's ``messages``
    iterator then never yields, but still ends with ``MqttError`` when the connection does,
    so the link's receive task keeps watching the connection as on the queue path.
    """

    def __init__(
        self,
        client: aiomqtt.Client,
        callback: PahoCallback,
        *,
        hold_max: int,
        on_full: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._aiomqtt = client
        self._paho: paho.Client = client._client
        self._callback = callback
        self._clock = clock
        self._hold_max = hold_max
        self._on_full = on_full
        self._loop = asyncio.get_running_loop()
        #: Messages delivered so far: tells the reader when a read produced nothing.
        self.delivered = 0
        #: Messages that came before :meth:`release` (None once released).
        self._held: list[tuple[paho.MQTTMessage, float]] | None = []

    def release(self) -> None:
        """Hand over the held messages in order; from now on deliver each as it comes."""
        held, self._held = self._held, None
        for message, arrival in held or ():
            self._callback(message, arrival)

    def install(self) -> None:
        self._paho.on_message = self._on_message
        aiomqtt_open = self._paho.on_socket_open

        def on_socket_open(client: paho.Client, userdata: Any, sock: Any) -> None:
            if aiomqtt_open is not None:
                aiomqtt_open(client, userdata, sock)  # registers aiomqtt's reader, misc loop
            # Queued after aiomqtt's registration, so this reader replaces aiomqtt's.
            self._loop.call_soon_threadsafe(self._loop.add_reader, sock.fileno(), self._read)

        self._paho.on_socket_open = on_socket_open

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.delivered += 1
        arrival = self._clock()
        held = self._held
        if held is None:
            self._callback(message, arrival)
        elif len(held) < self._hold_max:
            held.append((message, arrival))
        elif self._on_full is not None:
            self._on_full(message._topic.decode("utf-8", "replace"))

    def _read(self) -> None:
        """aiomqtt's reader, taking up to :data:`READ_BATCH` packets instead of one."""
        paho_client = self._paho
        try:
            for _ in range(READ_BATCH):
                before = self.delivered
                if paho_client.loop_read() != paho.MQTT_ERR_SUCCESS:
                    return  # paho closed the socket (and told aiomqtt via on_disconnect)
                sock = paho_client._sock
                pending = getattr(sock, "pending", None)  # TLS: bytes decrypted but unread
                if self.delivered == before and not (pending is not None and pending() > 0):
                    return  # nothing more to read now (or a non-PUBLISH packet: next wake-up)
        except Exception as exc:  # as aiomqtt does: a broken socket ends the connection
            disconnected = self._aiomqtt._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)
