"""One ``aiomqtt.Client`` per connection attempt, configured from the settings.

* **A fresh client per attempt.** aiomqtt documents reusing one client in an ``async with``
  loop, but after an unclean disconnect a reused client keeps its "connected" future
  resolved: the next ``async with`` returns *before* the broker's CONNACK, and a refused
  CONNACK (wrong password) then surfaces only as "Disconnected during message iteration".
  A new client per attempt reports every refusal with its reason code. Nothing is lost by
  it: a publish in flight when the connection dies returns ``False`` and the caller (the
  outbox) sends it again.
* **Persistent session.** A fixed client id; MQTT 3.1.1 ``clean_session=False``; MQTT 5
  ``clean_start=False`` *and* a SessionExpiryInterval (without it an MQTT 5 session ends
  at disconnect, and aiomqtt's default ``clean_start`` wipes it on the first connect).
  Readings published while the agent is away are queued by the broker and delivered on
  reconnect.
* **Last Will** ``offline``, retained, for a connection that dies without a DISCONNECT.
* **No Nagle** on the socket (:data:`.tcp.SOCKET_OPTIONS`) and **one ``send``** for all
  that paho has queued (:mod:`.writes`): a tick's scores go out at once, together.

``queue_type``, ``max_queued_incoming_messages`` and ``pending_calls_threshold`` are
aiomqtt 2.x features that aiomqtt 3 removes (``pyproject.toml`` pins ``aiomqtt<3``);
:func:`send_nowait` and :func:`out_backlog` reach aiomqtt's paho client (``_client``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties

from edge_agent.config import AgentSettings

from . import tcp, writes
from .properties import connect_properties
from .status import status_payload, status_topic
from .tls import tls_context
from .transport import ModelTrace

#: Incoming messages aiomqtt may hold for the receive loop; beyond this they are dropped.
INCOMING_QUEUE_MAX = 10_000
#: How long to wait for the broker's CONNACK (aiomqtt's default timeout for its calls).
CONNECT_TIMEOUT_S = 10.0
#: Publishes waiting for their PUBACK at once; more wait their turn. aiomqtt scans all
#: pending calls on every call, so unbounded concurrency costs quadratic time.
MAX_CONCURRENT_CALLS = 64
#: aiomqtt warns about "pending publish calls" above this many (default 10: log spam).
PENDING_CALLS_WARN = 2 * MAX_CONCURRENT_CALLS


def build_client(
    settings: AgentSettings,
    *,
    model_set_version: str | None = None,
    model_trace: ModelTrace | None = None,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
    logger: logging.Logger | None = None,
    timeout: float | None = None,
) -> aiomqtt.Client:
    """An unconnected client for ``settings`` (must be called inside the running loop).

    ``timeout`` bounds the wait for CONNACK (default :data:`CONNECT_TIMEOUT_S`). Raises
    ``OSError``/``ssl.SSLError`` for unreadable password, CA or certificate files.
    """
    m = settings.mqtt
    v5 = m.protocol == "5"
    will = aiomqtt.Will(
        topic=status_topic(settings),
        payload=status_payload("offline", settings, model_set_version, model_trace),
        qos=1,
        retain=True,
    )
    session: dict[str, Any]
    if v5:
        session = {
            "clean_start": False,
            "properties": connect_properties(m.session_expiry_seconds),
        }
    else:
        session = {"clean_session": False}
    client = aiomqtt.Client(
        m.host,
        m.port,
        identifier=settings.client_id,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        username=m.username,
        password=m.resolved_password() if m.username is not None else None,
        keepalive=m.keepalive,
        will=will,
        tls_context=tls_context(m.tls) if m.tls.enabled else None,
        max_queued_incoming_messages=INCOMING_QUEUE_MAX,
        queue_type=queue_type,
        logger=logger,
        timeout=CONNECT_TIMEOUT_S if timeout is None else timeout,
        max_concurrent_outgoing_calls=MAX_CONCURRENT_CALLS,
        socket_options=tcp.SOCKET_OPTIONS,
        **session,
    )
    client.pending_calls_threshold = PENDING_CALLS_WARN
    writes.install(client._client)
    return client


def send_nowait(
    client: aiomqtt.Client,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    properties: Properties | None,
) -> bool:
    """Hand a PUBLISH to paho without waiting for anything: True if paho queued it.

    What ``aiomqtt.Client.publish`` does before it creates its futures, on the loop thread
    as aiomqtt does. paho 2.x refuses with ``MQTT_ERR_NO_CONN`` without a socket and with
    ``MQTT_ERR_QUEUE_SIZE`` at ``max_queued_messages`` (QoS > 0 only; unset here).
    """
    info = client._client.publish(topic, payload, qos, retain, properties)
    return info.rc == paho.MQTT_ERR_SUCCESS


def out_backlog(client: aiomqtt.Client) -> int:
    """Packets paho has queued for the socket but not yet written (all kinds: PUBLISH,
    PUBACK, PINGREQ); grows when the socket to the broker does not take them."""
    return len(client._client._out_packet)
