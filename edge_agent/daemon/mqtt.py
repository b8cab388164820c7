"""The agent's one MQTT connection: connect, subscribe, receive, publish, reconnect forever.

Built on aiomqtt 2.x (asyncio over paho-mqtt). Design points, each learnt the hard way:

* **A fresh ``aiomqtt.Client`` per connection attempt.** aiomqtt documents reusing one
  client in an ``async with`` loop, but after an unclean disconnect a reused client keeps
  its "connected" future resolved: the next ``async with`` returns *before* the broker's
  CONNACK, and a refused CONNACK (wrong password) then surfaces only as "Disconnected during
  message iteration". A new client per attempt reports every refusal with its reason code.
  Nothing is lost by it: a publish in flight when the connection dies returns ``False`` and
  the caller (the outbox) sends it again.
* **Persistent session.** A fixed client id; MQTT 3.1.1 ``clean_session=False``; MQTT 5
  ``clean_start=False`` *and* a SessionExpiryInterval (without it an MQTT 5 session ends
  at disconnect, and aiomqtt's default ``clean_start`` wipes it on the first connect).
  Readings published while the agent is away are queued by the broker and delivered on
  reconnect.
* **Status.** A retained ``online`` on the status topic after connecting, ``stopped`` on a
  clean stop, and a retained ``offline`` Last Will the broker publishes when the
  connection dies without a DISCONNECT.
* **The receive loop never waits on the network.** It only hands each message to a
  synchronous callback. Publishing (``publish`` waits for the PUBACK of a QoS 1 message)
  happens in the callers' tasks, and ``on_connect`` (e.g. draining the outbox) runs as its
  own task, so neither can stall the intake of readings.
* **Bounded intake.** aiomqtt queues incoming messages between paho's socket callback and
  the receive loop; the queue is bounded (:data:`INCOMING_QUEUE_MAX`) so a stalled loop
  cannot eat the memory of a small box. aiomqtt cannot pause the socket, so a message
  arriving at a full queue is *dropped* (after paho has acknowledged it) and counted as
  ``messages_rejected{reason="queue_full"}`` (and in ``messages_received``): the bound is a
  memory guard, not flow control.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import cache
from importlib import metadata
from typing import Any, Literal

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from structlog.typing import FilteringBoundLogger

from edge_agent import __version__
from edge_agent.config import AgentSettings, TlsSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alerts import rfc3339
from edge_agent.pipeline.lost_data import LostDataWarnings
from edge_agent.pipeline.rejections import RejectReason
from edge_agent.topics import fill, subscription_filter

#: Incoming messages aiomqtt may hold for the receive loop; beyond this they are dropped.
INCOMING_QUEUE_MAX = 10_000
#: Queued messages handled per wake-up of the receive loop before it yields to others.
RECEIVE_BATCH = 256
#: How long to wait for the broker's CONNACK (aiomqtt's default timeout for its calls).
CONNECT_TIMEOUT_S = 10.0
#: Publishes waiting for their PUBACK at once; more wait their turn. aiomqtt scans all
#: pending calls on every call, so unbounded concurrency costs quadratic time.
MAX_CONCURRENT_CALLS = 64
#: aiomqtt warns about "pending publish calls" above this many (default 10: log spam).
_PENDING_CALLS_WARN = 2 * MAX_CONCURRENT_CALLS

StatusState = Literal["online", "offline", "stopped"]
MessageCallback = Callable[[str, bytes, float], None]


# -- payloads and topics ---------------------------------------------------------------


@cache
def _onnxruntime_version() -> str | None:
    # Read from the installed metadata: importing onnxruntime just for its version is slow.
    try:
        return metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        return None


def status_topic(settings: AgentSettings) -> str:
    return fill(settings.topics.status, plant=settings.plant, agent_id=settings.agent_id)


def status_payload(
    state: StatusState,
    settings: AgentSettings,
    model_set_version: str | None,
    model_trace: Mapping[str, str | int | None] | None = None,
) -> bytes:
    """Retained status JSON: who this agent is, what it runs, and whether it is up.

    ``model_set`` traces the running set to its training run and registry version
    (:attr:`edge_agent.pipeline.manifest.Manifest.trace`); ``plant_info`` is the configured
    metadata.
    """
    body: dict[str, object] = {
        "state": state,
        "agent_id": settings.agent_id,
        "plant": settings.plant,
        "ts": rfc3339(time.time()),
        "versions": {
            "edge_agent": __version__,
            "model_set": model_set_version,
            "onnxruntime": _onnxruntime_version(),
        },
        "pid": os.getpid(),
        "model_set": {"version": model_set_version, **(model_trace or {})},
    }
    info = settings.plant_info.status_fields()
    if info:
        body["plant_info"] = info
    return json.dumps(body, separators=(",", ":")).encode()


def _wildcard_topic(template: str, settings: AgentSettings) -> str:
    """Fill the plant and agent id into a topic template; every other placeholder is ``+``."""
    return subscription_filter(template, {"plant": settings.plant, "agent_id": settings.agent_id})


def subscription_topics(settings: AgentSettings) -> list[str]:
    """Wildcard subscriptions for this plant: one for single readings, one for telemetry."""
    topics = [
        _wildcard_topic(settings.topics.sensor, settings),
        _wildcard_topic(settings.topics.telemetry, settings),
    ]
    return list(dict.fromkeys(topics))


def command_subscriptions(settings: AgentSettings) -> list[str]:
    """The wildcard subscription for alarm commands to this plant's units (alarm lifecycle)."""
    return [_wildcard_topic(settings.topics.alarm_command, settings)]


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho is untyped here


def alert_properties(alert_id: str, model_version: str, expiry_s: int) -> Properties:
    """MQTT 5 PUBLISH properties of an alert: expiry and ids a consumer can route on."""
    props = _properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    if expiry_s > 0:
        props.MessageExpiryInterval = int(expiry_s)
    props.UserProperty = [("alert_id", alert_id), ("model_set_version", model_version)]
    return props


def publish_properties(values: Mapping[str, Any]) -> Properties:
    """paho PUBLISH properties from ``{"MessageExpiryInterval": 60, "UserProperty": [...]}``."""
    props = _properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)  # paho rejects names that are not PUBLISH properties
    return props


# -- the client --------------------------------------------------------------------------


def backoff_delays(min_s: float, max_s: float, rng: random.Random | None = None) -> Iterator[float]:
    """Reconnect delays: exponential from ``min_s``, capped at ``max_s``, with jitter.

    The n-th delay is uniform in ``[min_s, min(max_s, min_s * 2**n)]``: full jitter above a
    floor, so a fleet of agents does not reconnect in lock-step after a broker restart and
    a dead broker is never hammered faster than ``min_s``.
    """
    rng = rng or random.Random()
    ceiling = min_s
    while True:
        yield rng.uniform(min_s, ceiling)
        ceiling = min(max_s, ceiling * 2)


#: During an outage, a reconnect line at least this often (seconds), whatever the back-off.
RETRY_LOG_EVERY_SECONDS = 300.0


def retry_log_due(attempt: int, seconds_since_logged: float) -> bool:
    """Whether a failed attempt's "reconnecting" line goes to the log at WARNING.

    Attempts 1, 2, 4, 8, … (the back-off doubles too, so lines thin out as it grows), and at
    least one every :data:`RETRY_LOG_EVERY_SECONDS`: a long outage never looks like a hang,
    and a week of it is a few thousand lines, not a hundred thousand.
    """
    return attempt & (attempt - 1) == 0 or seconds_since_logged >= RETRY_LOG_EVERY_SECONDS


def _tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """Verify the broker against ``ca_file`` (system CAs when unset); optional client cert."""
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None and tls.key_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.insecure:
        ctx.check_hostname = False  # chain still verified; only the host name is not
    return ctx


class _StampedQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue, remembering when each message arrived and counting drops.

    aiomqtt fills it from paho's socket callback with ``put_nowait`` and discards the
    message when it raises ``QueueFull``. Arrival times are kept in FIFO order beside the
    messages so latency metrics include the time spent waiting here.
    """

    def __init__(
        self,
        maxsize: int = 0,
        on_full: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(maxsize)
        self.arrivals: deque[float] = deque()
        self._on_full = on_full
        self._clock = clock

    def put_nowait(self, item: aiomqtt.Message) -> None:
        try:
            super().put_nowait(item)
        except asyncio.QueueFull:
            if self._on_full is not None:
                self._on_full(item.topic.value)
            raise
        self.arrivals.append(self._clock())

    def take_arrival(self) -> float:
        return self.arrivals.popleft() if self.arrivals else self._clock()


def _queue_class(
    on_full: Callable[[str], None], made: list[_StampedQueue], clock: Callable[[], float]
) -> type[_StampedQueue]:
    """A queue class for one client that hands back the instance aiomqtt creates from it."""

    class _LinkQueue(_StampedQueue):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(maxsize, on_full, clock)
            made.append(self)

    return _LinkQueue


class _PahoLogRelay(logging.Handler):
    """Passes paho's and aiomqtt's warnings to our log and keeps the latest one.

    When a connection dies before the broker's CONNACK (a TLS listener demanding a client
    certificate, a plain client on a TLS port) aiomqtt ignores the disconnect and only
    times out; the real reason is in paho's "failed to receive on socket" warning.
    """

    def __init__(self, log: FilteringBoundLogger) -> None:
        super().__init__(logging.WARNING)
        self._log = log
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()
        self._log.debug("mqtt_library_warning", message=self.last)

    def logger(self) -> logging.Logger:
        # Not registered with logging.getLogger: private to one link, never propagates.
        lib_log = logging.Logger("edge_agent.daemon.mqtt.paho", logging.WARNING)
        lib_log.addHandler(self)
        return lib_log


def build_client(
    settings: AgentSettings,
    *,
    model_set_version: str | None = None,
    model_trace: Mapping[str, str | int | None] | None = None,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
    logger: logging.Logger | None = None,
) -> aiomqtt.Client:
    """An unconnected client for ``settings`` (must be called inside the running loop).

    Raises ``OSError``/``ssl.SSLError`` for unreadable password, CA or certificate files.
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
        connect_props = _properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = m.session_expiry_seconds
        session = {"clean_start": False, "properties": connect_props}
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
        tls_context=_tls_context(m.tls) if m.tls.enabled else None,
        max_queued_incoming_messages=INCOMING_QUEUE_MAX,
        queue_type=queue_type,
        logger=logger,
        timeout=CONNECT_TIMEOUT_S,
        max_concurrent_outgoing_calls=MAX_CONCURRENT_CALLS,
        **session,
    )
    client.pending_calls_threshold = _PENDING_CALLS_WARN
    return client


# -- explaining failures -------------------------------------------------------------------

_AUTH_CODES = {4, 5, 134, 135}  # 3.1.1 bad credentials / not authorised; 5.0 likewise


def _tls_hint(text: str) -> str:
    if "certificate required" in text:
        return " (the broker wants a client certificate: set mqtt.tls.cert_file and key_file)"
    if "verify failed" in text:
        return " (check mqtt.tls.ca_file and the broker's certificate and host name)"
    if "wrong version number" in text or "record layer" in text:
        return " (is this port a TLS listener?)"
    return ""


def _is_tls(text: str) -> bool:
    return "ssl" in text or "certificate" in text or "tls" in text


def describe_error(
    exc: BaseException, socket_error: str | None = None, *, while_connected: bool = False
) -> tuple[str, str]:
    """``(cause, message)`` for a connection failure, meant for operators; never secrets.

    cause is one of auth, refused, tls, unreachable, timeout, connection_lost, config, error.
    ``socket_error`` is paho's last warning during the attempt, which often names the real
    cause of a time-out or a lost connection.
    """
    if isinstance(exc, MqttConnectError):
        rc = exc.rc
        code = rc.value if isinstance(rc, ReasonCode) else rc
        reason = str(rc) if isinstance(rc, ReasonCode) else str(exc)
        if code in _AUTH_CODES:
            return "auth", f"broker refused the login ({reason}): check mqtt.username/password"
        return "refused", f"broker refused the connection ({reason})"
    if not isinstance(exc, aiomqtt.MqttError):
        # Raised while building the client, before any network I/O: files and settings.
        return "config", f"cannot prepare the connection: {exc}"
    text = str(exc)
    if exc.__cause__ is not None:
        text = f"{text}: {exc.__cause__}"
    detail = f"{text} (last socket error: {socket_error})" if socket_error else text
    low, low_all = text.lower(), detail.lower()
    if while_connected or "disconnected" in low or "connection lost" in low:
        return "connection_lost", f"connection lost: {detail}"
    if _is_tls(low):
        return "tls", f"TLS handshake failed: {detail}{_tls_hint(low)}"
    if "refused" in low or "unreachable" in low or "name or service" in low:
        return "unreachable", f"broker not reachable: {detail}"
    if "timed out" in low:
        if _is_tls(low_all):  # the socket died in the handshake; aiomqtt waited for CONNACK
            return "tls", f"TLS connection failed: {detail}{_tls_hint(low_all)}"
        return "timeout", f"broker did not answer in time: {detail}"
    return "error", detail


def _refused(code: object) -> bool:
    """A SUBACK entry that refused the subscription (0x80 and above)."""
    if isinstance(code, ReasonCode):
        return bool(code.is_failure)
    return isinstance(code, int) and code >= 0x80


# -- the link --------------------------------------------------------------------------------


class MqttLink:
    """One long-lived connection: connect, subscribe, receive, publish; reconnect forever."""

    def __init__(
        self,
        settings: AgentSettings,
        metrics: Metrics,
        log: FilteringBoundLogger,
        *,
        subscriptions: list[str],
        on_message: MessageCallback,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        on_retained: Callable[[str], bool] | None = None,
        model_set_version: str | None = None,
        model_trace: Mapping[str, str | int | None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.log = log.bind(component="mqtt")
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.on_connect = on_connect
        #: Sees the topic of every *retained* message first; True = drop it (e.g. a command
        #: someone published retained, which would otherwise replay at every reconnect).
        self.on_retained = on_retained
        #: Reported in the status messages; the agent updates it after a model reload.
        self.model_set_version = model_set_version
        self.model_trace = model_trace
        self._rng = rng
        #: Stamps each message's arrival (the agent's clock, injectable for replays).
        self._clock = clock
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self._receiver: asyncio.Task[None] | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._final_status = True
        self._last_error: str | None = None
        self._failures = 0
        #: monotonic times: first failure of the current outage, last reconnect line logged
        self._down_since = 0.0
        self._retry_logged = float("-inf")
        self._relay = _PahoLogRelay(self.log)
        self._lost = LostDataWarnings(self.log)
        self._lib_logger = self._relay.logger()
        self.status_topic = status_topic(settings)
        metrics.broker_connected.set(0)

    # -- state -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """True once connected (and subscribed); False if ``timeout`` passes first."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def use_model_set(
        self, version: str, trace: Mapping[str, str | int | None] | None = None
    ) -> None:
        """Name this model set in status messages from now on (the next connect included) and
        re-publish the retained ``online`` status now if connected."""
        self.model_set_version = version
        self.model_trace = trace
        if self.connected:
            payload = status_payload("online", self.settings, version, trace)
            await self.publish(self.status_topic, payload, qos=1, retain=True)

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and receive until :meth:`stop`; every failure is followed by a retry."""
        if self._running or self._stop.is_set():
            return
        self._running = True
        m = self.settings.mqtt
        delays = backoff_delays(m.reconnect_min_seconds, m.reconnect_max_seconds, self._rng)
        first = True
        try:
            while not self._stop.is_set():
                if not first:
                    self.metrics.reconnects.inc()
                first = False
                if await self._session():
                    delays = backoff_delays(
                        m.reconnect_min_seconds, m.reconnect_max_seconds, self._rng
                    )
                if self._stop.is_set():
                    break
                delay = next(delays)
                self._log_retry(delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        except asyncio.CancelledError:
            self._stop.set()
            raise
        finally:
            self._set_disconnected()
            self._running = False
            self._finished.set()

    async def _session(self) -> bool:
        """One connection from connect to loss; True if it got as far as subscribing."""
        made: list[_StampedQueue] = []
        self._relay.last = None
        try:
            client = build_client(
                self.settings,
                model_set_version=self.model_set_version,
                model_trace=self.model_trace,
                queue_type=_queue_class(self._count_drop, made, self._clock),
                logger=self._lib_logger,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._report_failure(exc)
            return False
        queue = made[0] if made else None
        subscribed = False
        self._client = client
        try:
            async with client:
                if not self._stop.is_set():
                    await self._announce(client, "online")
                    await self._subscribe(client)
                    subscribed = True
                if self._stop.is_set():  # stop() came while we were connecting
                    if self._final_status:
                        await self._announce(client, "stopped")
                    return subscribed
                self._connected.set()
                self.metrics.broker_connected.set(1)
                self._log_connected()
                if self.on_connect is not None:
                    self._connect_task = asyncio.create_task(self._run_on_connect())
                self._receiver = asyncio.create_task(self._receive(client, queue))
                try:
                    await self._receiver
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is None or not task.cancelling():
                        pass  # stop() cancelled the receiver: leave to disconnect cleanly
                    else:  # run() itself was cancelled: still say so before disconnecting
                        await self._announce_stopped_quietly(client)
                        raise
        except aiomqtt.MqttError as exc:
            if not self._stop.is_set():
                self._report_failure(exc, was_connected=subscribed)
        finally:
            self._set_disconnected()
            self._client = None
        if queue is not None:
            # aiomqtt stops iterating at a disconnect even with messages still queued; they
            # were acknowledged to the broker already, so hand them over rather than lose them.
            self._drain(queue)
        return subscribed

    async def _announce(self, client: aiomqtt.Client, state: StatusState) -> None:
        payload = status_payload(state, self.settings, self.model_set_version, self.model_trace)
        await client.publish(self.status_topic, payload, qos=1, retain=True)

    async def _announce_stopped_quietly(self, client: aiomqtt.Client) -> None:
        """Best effort ``stopped`` while run() is being cancelled; bounded to a second."""
        self._connected.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._announce(client, "stopped"), 1.0)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        if not self.subscriptions:
            return
        qos = self.settings.mqtt.qos
        topics: list[tuple[str, Any]]
        if self.settings.mqtt.protocol == "5":
            topics = [(t, SubscribeOptions(qos=qos)) for t in self.subscriptions]
        else:
            topics = [(t, qos) for t in self.subscriptions]
        granted = await client.subscribe(topics)
        for topic, code in zip(self.subscriptions, granted, strict=False):
            if _refused(code):
                self.log.error("mqtt_subscribe_refused", topic=topic, reason=str(code))

    async def _receive(self, client: aiomqtt.Client, queue: _StampedQueue | None) -> None:
        # aiomqtt's iterator costs a task and a few loop rounds per message, while paho reads
        # packets on every round: under a flood the queue would only grow. So after each
        # message take what else is queued (a bounded batch) before waiting again.
        async for message in client.messages:
            if queue is None:
                self._deliver(message, self._clock())
                continue
            self._deliver(message, queue.take_arrival())
            for _ in range(RECEIVE_BATCH):
                if queue.empty():
                    break
                self._deliver(queue.get_nowait(), queue.take_arrival())

    def _drain(self, queue: _StampedQueue) -> None:
        while not queue.empty():
            self._deliver(queue.get_nowait(), queue.take_arrival())

    def _deliver(self, message: aiomqtt.Message, arrival: float) -> None:
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = bytes(payload) if isinstance(payload, bytearray) else b""
        try:
            check = self.on_retained if message.retain else None
            if check is not None and check(message.topic.value):
                return
            self.on_message(message.topic.value, payload, arrival)
        except Exception:
            # A bug in one handler must not take the connection down with it.
            self.metrics.messages_rejected.labels(reason=RejectReason.HANDLER_ERROR).inc()
            self.log.exception("mqtt_on_message_failed", topic=message.topic.value)

    async def _run_on_connect(self) -> None:
        assert self.on_connect is not None
        try:
            await self.on_connect()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("mqtt_on_connect_failed")

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Mapping[str, Any] | Properties | None = None,
        timeout: float = 10.0,
    ) -> bool:
        """True once the broker acknowledged (PUBACK for QoS 1); False, never raises, otherwise.

        Awaits the acknowledgement in the caller's task, never in the receive loop. A False
        after a timeout may still be delivered later (paho keeps the message in flight):
        delivery is at-least-once, so consumers de-duplicate alerts by their ``alert_id``.
        Properties are MQTT 5 only and silently left out on MQTT 3.1.1.
        """
        client = self._client
        if client is None or not self.connected:
            return False
        props: Properties | None = None
        if self.settings.mqtt.protocol == "5" and properties is not None:
            try:
                props = (
                    properties
                    if isinstance(properties, Properties)
                    else publish_properties(properties)
                )
            except Exception as exc:  # paho raises its own MQTTException for bad names
                self.log.error("mqtt_publish_bad_properties", topic=topic, error=str(exc))
                return False
        try:
            # The outer bound also covers the wait for a free slot (MAX_CONCURRENT_CALLS).
            async with asyncio.timeout(timeout):
                await client.publish(
                    topic, payload, qos=qos, retain=retain, properties=props, timeout=timeout
                )
        except TimeoutError:
            self.log.debug("mqtt_publish_timeout", topic=topic, timeout=timeout)
            return False
        except aiomqtt.MqttError as exc:
            self.log.debug("mqtt_publish_failed", topic=topic, error=str(exc))
            return False
        except ValueError as exc:  # invalid topic or QoS: a bug, but do not crash the caller
            self.log.error("mqtt_publish_invalid", topic=topic, error=str(exc))
            return False
        return True

    # -- stopping ----------------------------------------------------------------------------

    async def stop(self, final_status: bool = True) -> None:
        """Publish retained ``stopped`` (if connected), disconnect cleanly, end :meth:`run`.

        A clean DISCONNECT means the broker does not publish the ``offline`` Last Will.
        """
        if self._stop.is_set() and not self._running:
            return
        self._final_status = final_status
        if final_status and self.connected:
            payload = status_payload(
                "stopped", self.settings, self.model_set_version, self.model_trace
            )
            if not await self.publish(self.status_topic, payload, retain=True, timeout=5.0):
                self.log.warning("mqtt_stopped_status_not_sent")
        self._stop.set()
        if self._connect_task is not None:
            self._connect_task.cancel()
        if self._receiver is not None:
            self._receiver.cancel()
        if self._running:
            await self._finished.wait()

    # -- bookkeeping ---------------------------------------------------------------------------

    def _count_drop(self, topic: str) -> None:
        # Received from the broker (and acknowledged) but never handed on: counted on both
        # sides so that received = accepted + rejected still adds up.
        self.metrics.messages_received.inc()
        self.metrics.messages_rejected.labels(reason=RejectReason.QUEUE_FULL).inc()
        self._lost.rejected(RejectReason.QUEUE_FULL, topic)

    def _log_retry(self, delay: float) -> None:
        """The wait before the next attempt: WARNING at a back-off-aware rate, else debug."""
        now = time.monotonic()
        attempt = max(1, self._failures)
        fields: dict[str, Any] = {
            "attempt": attempt,
            "next_delay_seconds": round(delay, 2),
            "down_for_seconds": round(now - self._down_since, 1) if self._failures else 0.0,
            "host": self.settings.mqtt.host,
            "port": self.settings.mqtt.port,
            "error": self._last_error,
        }
        if retry_log_due(attempt, now - self._retry_logged):
            self._retry_logged = now
            self.log.warning("mqtt_reconnecting", **fields)
        else:
            self.log.debug("mqtt_reconnecting", **fields)

    def _set_disconnected(self) -> None:
        self._connected.clear()
        self.metrics.broker_connected.set(0)
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        self._connect_task = None
        self._receiver = None

    def _log_connected(self) -> None:
        m = self.settings.mqtt
        self.log.info(
            "mqtt_connected",
            host=m.host,
            port=m.port,
            client_id=self.settings.client_id,
            protocol=m.protocol,
            tls=m.tls.enabled,
            after_failures=self._failures,
        )
        self._failures = 0
        self._last_error = None

    def _report_failure(self, exc: BaseException, *, was_connected: bool = False) -> None:
        """Log a failure once per distinct cause; identical retries go to debug."""
        cause, message = describe_error(exc, self._relay.last, while_connected=was_connected)
        if self._failures == 0:
            self._down_since = time.monotonic()
            self._retry_logged = float("-inf")
        self._failures += 1
        m = self.settings.mqtt
        fields: dict[str, Any] = {
            "cause": cause,
            "error": message,
            "host": m.host,
            "port": m.port,
            "attempt": self._failures,
        }
        if was_connected:
            self.log.warning("mqtt_connection_lost", **fields)
        elif message != self._last_error:
            self.log.error("mqtt_connect_failed", **fields)
        else:
            self.log.debug("mqtt_connect_failed", **fields)
        self._last_error = message
