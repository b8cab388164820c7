"""The write path: everything paho has queued for the socket goes out in one ``send``.

paho writes its queue one packet per ``send``, and for every QoS 0 PUBLISH it then builds a
``ReasonCode`` and a ``Properties`` for the ``on_publish`` callback. A tick hands all its
scores to paho at once, so a 125-unit burst was 125+ system calls and as many callback
objects: 4.0–6.7 ms on the event loop (p50 of 40 writes, a real Mosquitto, three runs),
0.4–1.1 ms when joined into one buffer. In ``benchmarks/latency.py``'s burst (broker with
``set_tcp_nodelay``; interleaved runs, two each) p50 at the subscriber went from 44.4 /
46.7 to 34.2 / 41.8 ms and p99 from 67.3 / 63.0 to 55.5 / 52.5 ms; at 20 k per-sensor
msgs/s throughput and CPU stayed within run-to-run noise. :func:`install` replaces the client's
``_packet_write`` with :func:`write_queued`, which joins the queued packets (up to
:data:`MAX_WRITE_BYTES`), sends them, and then does per fully written packet what paho
does: ``on_publish`` and ``info._set_as_published()`` for a QoS 0 PUBLISH (one pair of
callback objects per ``send``, not per packet). A short ``send`` leaves the rest of the
packet it stopped in at the head of the queue, exactly as paho's own writer does, and
paho's ``loop_write`` keeps the socket registered for writing while anything is queued. A
DISCONNECT at the head goes to paho's own writer (it closes the socket after it).

The bytes on the wire are those paho's writer sends, in the same order (tested against it
through a socket too small for them). Uses paho 2.x internals (``_out_packet`` and its
packet dicts, ``_sock_send``, ``_in_callback_mutex``, ``_msgtime_mutex``,
``_last_msg_out``) and paho's version 2 callbacks, which aiomqtt 2.x asks for; a paho
without them keeps its own writer (:data:`PAHO_INTERNALS`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

#: At most this many bytes are joined for one ``send`` (the rest go in the next).
MAX_WRITE_BYTES = 256 * 1024

#: The paho internals :func:`write_queued` relies on.
PAHO_INTERNALS = (
    "_out_packet",
    "_sock_send",
    "_packet_write",
    "_in_callback_mutex",
    "_msgtime_mutex",
    "_last_msg_out",
    "_userdata",
    "_easy_log",
)

_PUBLISH = 0x30
_DISCONNECT = 0xE0
_clock = getattr(paho, "time_func", time.monotonic)


def batched_writing_supported(client: paho.Client) -> bool:
    """paho has the internals, and calls ``on_publish`` the way aiomqtt's clients ask."""
    return all(hasattr(client, name) for name in PAHO_INTERNALS) and (
        getattr(client, "_callback_api_version", None) == CallbackAPIVersion.VERSION2
    )


def install(client: paho.Client) -> bool:
    """Make ``client`` write its queue with :func:`write_queued`; False (paho's own writer
    kept) if this paho lacks the internals it needs."""
    if not batched_writing_supported(client):
        return False
    own: Callable[[], MQTTErrorCode] = client._packet_write

    def packet_write() -> MQTTErrorCode:
        return write_queued(client, own)

    client._packet_write = packet_write  # type: ignore[method-assign]
    return True


def write_queued(client: paho.Client, own: Callable[[], MQTTErrorCode]) -> MQTTErrorCode:
    """paho's ``_packet_write``, one ``send`` per :data:`MAX_WRITE_BYTES` of queued packets."""
    out: Any = client._out_packet
    while out:
        if out[0]["command"] & 0xF0 == _DISCONNECT:
            return own()
        data = _joined(out)
        try:
            sent = client._sock_send(data)
        except (AttributeError, ValueError):  # no socket (any more): as paho's writer
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:
            client._easy_log(paho.MQTT_LOG_ERR, "failed to send on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if sent <= 0:
            break
        _written(client, out, sent)
        if sent < len(data):
            break  # the socket is full: the rest when it is writable again
    with client._msgtime_mutex:
        client._last_msg_out = _clock()
    return MQTTErrorCode.MQTT_ERR_SUCCESS


def _joined(out: Any) -> bytes:
    """The unsent bytes of the queued packets up to a DISCONNECT or the size bound."""
    parts: list[bytes] = []
    size = 0
    for packet in out:
        if packet["command"] & 0xF0 == _DISCONNECT or size >= MAX_WRITE_BYTES:
            break
        data, pos = packet["packet"], packet["pos"]
        parts.append(data[pos:] if pos else data)
        size += packet["to_process"]
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _written(client: paho.Client, out: Any, sent: int) -> None:
    """Account ``sent`` bytes against the head of the queue, as paho's writer does."""
    on_publish: Any = client.on_publish  # version 2: (client, userdata, mid, reason, props)
    reason: ReasonCode | None = None
    props: Properties | None = None
    while sent > 0:
        packet = out[0]
        if sent < packet["to_process"]:
            packet["to_process"] -= sent
            packet["pos"] += sent
            return
        sent -= packet["to_process"]
        packet["pos"] += packet["to_process"]
        packet["to_process"] = 0
        out.popleft()
        if packet["command"] & 0xF0 != _PUBLISH or packet["qos"] != 0:
            continue
        if on_publish is not None:
            if reason is None:
                reason = ReasonCode(PacketTypes.PUBACK)
                props = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
            with client._in_callback_mutex:
                try:
                    on_publish(client, client._userdata, packet["mid"], reason, props)
                except Exception as err:
                    client._easy_log(paho.MQTT_LOG_ERR, "Caught exception in on_publish: %s", err)
                    if not client.suppress_exceptions:
                        raise
        packet["info"]._set_as_published()
