"""The direct receive path: the socket read in large chunks, PUBLISH packets decoded here.

aiomqtt keeps managing the connection (connect, subscribe, publish, keepalive, the
disconnect that ends the session); only reading changes. On aiomqtt's own path every
message is converted to an ``aiomqtt.Message``, put in a queue and taken out again by an
``async for`` that costs a few loop rounds, and paho reads each packet with three or more
``recv`` calls and builds an ``MQTTMessage`` (on MQTT 5 also a ``Properties``). Here one
``recv`` of up to :data:`READ_BYTES` per wake-up of the event loop is cut into packets by
:class:`~.framing.Framer`; the QoS 0/1 PUBLISH packets the agent consumes are delivered
at once (QoS 1 acknowledged after the handler, as paho does), stamped with the time their
bytes were read; every other packet goes to paho's own handler, so CONNACK, SUBACK, PUBACK,
PINGRESP and QoS 2 work as before. ``benchmarks/ingest_ceiling.py`` measures this path
beside aiomqtt's loop and paho's callback on MQTT 3.1.1 and 5.

There is no queue once the link is up, so nothing is dropped as ``queue_full``: the agent
reads the socket only as fast as it handles messages, and the backlog stays in TCP buffers
and the broker. Before that (between CONNACK and the end of subscribing, when a persistent
session already delivers what the broker kept) messages are *held*, as aiomqtt's queue
holds them until the receive loop starts, so their scores are not dropped as
"disconnected"; the hold has the queue's bound, and a message beyond it is counted as
``queue_full``.

This uses aiomqtt 2.x and paho 2.x internals (aiomqtt's paho client ``_client``, its
``_disconnected`` future and socket callbacks; paho's ``_sock_recv``, ``_in_packet`` and
``_packet_handle``, the state its own reader leaves a finished packet in), as
:mod:`.intake` hooks ``queue_type``: ``pyproject.toml`` pins ``aiomqtt<3``, and a paho
without those internals falls back to paho's own reader (:data:`PAHO_INTERNALS`, tested).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

from .framing import Framer, MalformedStream, Packet, Publish
from .tcp import ack_now

#: Bytes read per wake-up of the event loop (about 200 small sensor messages) before other
#: tasks get their turn.
READ_BYTES = 16384

#: ``callback(topic, payload, retain, arrival)``, called on the loop thread.
MessageHandler = Callable[[str, bytes, bool, float], None]

#: The paho internals the framed reader relies on.
PAHO_INTERNALS = (
    "_sock_recv",
    "_in_packet",
    "_packet_handle",
    "_loop_rc_handle",
    "_send_puback",
    "_easy_log",
    "_msgtime_mutex",
    "_last_bytes_received",
    "_manual_ack",
    "_protocol",
)


def framed_reading_supported(client: paho.Client) -> bool:
    """True if this paho has what the framed reader needs."""
    return all(hasattr(client, name) for name in PAHO_INTERNALS)


def _fresh_in_packet() -> dict[str, Any]:
    """paho's reader state between packets (as its ``_packet_read`` resets it)."""
    return {
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(b""),
        "to_process": 0,
        "pos": 0,
    }


class DirectReader:
    """Reads one aiomqtt client's socket and hands its messages to ``callback``.

    ``install`` must be called before the client connects. The client's ``messages``
    iterator then never yields, but still ends with ``MqttError`` when the connection does,
    so the link's receive task keeps watching the connection as on the queue path.
    """

    def __init__(
        self,
        client: aiomqtt.Client,
        callback: MessageHandler,
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
        self._framer = Framer(self._paho._protocol == paho.MQTTv5)
        #: False: paho lacks an internal the framed reader needs, so paho reads each packet.
        self.framed = framed_reading_supported(self._paho)
        #: Messages delivered (or held) so far.
        self.delivered = 0
        #: Messages that came before :meth:`release` (None once released).
        self._held: list[tuple[str, bytes, bool, float]] | None = []
        #: The arrival stamp of the bytes being handled (paho's callback reads it).
        self._arrival = 0.0

    def release(self) -> None:
        """Hand over the held messages in order; from now on deliver each as it comes."""
        held, self._held = self._held, None
        for topic, payload, retain, arrival in held or ():
            self._callback(topic, payload, retain, arrival)

    def install(self) -> None:
        self._paho.on_message = self._on_paho_message
        aiomqtt_open = self._paho.on_socket_open
        reader = self._read if self.framed else self._read_with_paho

        def on_socket_open(client: paho.Client, userdata: Any, sock: Any) -> None:
            if aiomqtt_open is not None:
                aiomqtt_open(client, userdata, sock)  # registers aiomqtt's reader, misc loop
            self._framer = Framer(client._protocol == paho.MQTTv5)  # a new connection
            # Queued after aiomqtt's registration, so this reader replaces aiomqtt's.
            self._loop.call_soon_threadsafe(self._loop.add_reader, sock.fileno(), reader)

        self._paho.on_socket_open = on_socket_open

    def _deliver(self, topic: str, payload: bytes, retain: bool, arrival: float) -> None:
        self.delivered += 1
        held = self._held
        if held is None:
            self._callback(topic, payload, retain, arrival)
        elif len(held) < self._hold_max:
            held.append((topic, payload, retain, arrival))
        elif self._on_full is not None:
            self._on_full(topic)

    def _on_paho_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        """A PUBLISH paho decoded (QoS 2, an aliased topic, or paho's own reader)."""
        arrival = self._arrival if self.framed else self._clock()
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", "replace")  # the handler counts it
        payload = message.payload
        payload = payload if type(payload) is bytes else bytes(payload)
        self._deliver(topic, payload, bool(message.retain), arrival)

    def _read(self) -> None:
        """One ``recv``, cut into packets: PUBLISH delivered here, the rest handled by paho."""
        client = self._paho
        try:
            try:
                data = client._sock_recv(READ_BYTES)
            except BlockingIOError:
                return
            except OSError as err:  # ConnectionError, TimeoutError, ssl.SSLError
                client._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                client._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                return
            if not data:
                client._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                return
            self._arrival = arrival = self._clock()
            ack_now(client._sock)  # else the broker's Nagle holds its next packet (see .tcp)
            with client._msgtime_mutex:
                client._last_bytes_received = time.monotonic()
            try:
                events = self._framer.feed(data)
            except MalformedStream as exc:
                client._easy_log(paho.MQTT_LOG_ERR, "malformed packet: %s", exc)
                client._loop_rc_handle(MQTTErrorCode.MQTT_ERR_PROTOCOL)
                return
            for event in events:
                if type(event) is Publish:
                    self._deliver(event.topic, event.payload, event.retain, arrival)
                    if event.qos and not client._manual_ack:
                        client._send_puback(event.mid)
                    continue
                rc = self._to_paho(event)  # type: ignore[arg-type]
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    client._loop_rc_handle(rc)
                    return
                if client._sock is None:
                    return  # paho closed the connection (an MQTT 5 DISCONNECT from the broker)
            sock = client._sock
            pending = getattr(sock, "pending", None)  # TLS: bytes decrypted but unread
            if pending is not None and pending() > 0:
                self._loop.call_soon(self._read)
        except Exception as exc:  # as aiomqtt does: a broken socket ends the connection
            self._fail(exc)

    def _to_paho(self, packet: Packet) -> MQTTErrorCode:
        """Hand one whole packet to paho's handler, in the state its own reader leaves."""
        client = self._paho
        state = _fresh_in_packet()
        state.update(
            command=packet.command,
            have_remaining=1,
            remaining_length=len(packet.body),
            packet=bytearray(packet.body),
        )
        client._in_packet = state  # type: ignore[assignment]  # paho's TypedDict, same keys
        try:
            rc: MQTTErrorCode = client._packet_handle()
        except MalformedPacket as exc:
            client._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        finally:
            client._in_packet = _fresh_in_packet()  # type: ignore[assignment]
        return rc

    def _read_with_paho(self) -> None:
        """The fallback: paho reads (one ``loop_read`` per packet, up to 64 per wake-up)."""
        client = self._paho
        try:
            for _ in range(64):
                before = self.delivered
                if client.loop_read() != paho.MQTT_ERR_SUCCESS:
                    return  # paho closed the socket (and told aiomqtt via on_disconnect)
                ack_now(client._sock)
                pending = getattr(client._sock, "pending", None)
                if self.delivered == before and not (pending is not None and pending() > 0):
                    return
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        disconnected = self._aiomqtt._disconnected
        if not disconnected.done():
            disconnected.set_exception(exc)
