"""The agent's one MQTT connection: connect, subscribe, receive, publish, reconnect forever.

The state machine only; the client's configuration is :mod:`.client`, the intake queue
:mod:`.intake`, the log of an outage :mod:`.outage`. Design points:

* **Status.** A retained ``online`` on the status topic after connecting, ``stopped`` on a
  clean stop, and the ``offline`` Last Will (see :mod:`.status`).
* **The receive loop never waits on the network** (:class:`~.intake.Intake`). Publishing
  (``publish`` waits for the PUBACK of a QoS 1 message) happens in the callers' tasks, and
  ``on_connect`` (e.g. draining the outbox) runs as its own task, so neither can stall the
  intake of readings.
* **Bounded intake.** A message arriving at a full intake queue is dropped and counted as
  ``messages_rejected{reason="queue_full"}`` (and in ``messages_received``). With
  ``mqtt.receive_path: direct`` paho's callback delivers instead (:mod:`.direct`), and the
  receive task only watches for the end of the connection.
* **Acknowledged publishing.** A QoS 1 publish is True only when its PUBACK's reason code
  says delivered (:mod:`.acks`): aiomqtt ignores the code, so an alert an MQTT 5 broker's
  ACL refused used to be deleted from the outbox as if delivered.
* **Fire-and-forget publishing.** :meth:`MqttLink.publish_nowait` hands a message to paho
  without a task or a future (QoS 0 scores); :attr:`MqttLink.publish_backlog` is what paho
  holds unwritten, the caller's back-pressure signal.

About 410 lines, more than the package's other modules: run, the session, publish and stop
share one set of events and tasks, and splitting them would spread one state machine over
several files.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiomqtt
from paho.mqtt.properties import Properties
from structlog.typing import FilteringBoundLogger

from edge_agent.config import AgentSettings
from edge_agent.metrics import Metrics

from . import client as _client
from .acks import Acks, PublishRefused
from .backoff import backoff_delays
from .direct import DirectReader
from .errors import subscription_refused
from .intake import Intake, StampedQueue
from .log_relay import PahoLogRelay
from .outage import OutageLog
from .properties import publish_properties, subscribe_requests
from .status import status_payload, status_topic
from .transport import MessageCallback, MessageProperties, ModelTrace, StatusState


class MqttLink:
    """One long-lived connection: connect, subscribe, receive, publish; reconnect forever.

    Implements :class:`~edge_agent.daemon.mqtt.transport.Transport`.
    """

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
        model_trace: ModelTrace | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.log = log.bind(component="mqtt")
        self.subscriptions = list(subscriptions)
        self.on_connect = on_connect
        self.intake = Intake(metrics, self.log, on_message, on_retained, clock)
        #: Reported in the status messages; the agent updates it after a model reload.
        self.model_set_version = model_set_version
        self.model_trace = model_trace
        self._rng = rng
        self._client: aiomqtt.Client | None = None
        self._acks: Acks | None = None
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self._receiver: asyncio.Task[None] | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._final_status = True
        self._outage = OutageLog(settings, self.log)
        self._relay = PahoLogRelay(self.log)
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

    async def use_model_set(self, version: str, trace: ModelTrace | None = None) -> None:
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
                self._outage.retrying(delay)
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
        made: list[StampedQueue] = []
        self._relay.last = None
        try:
            client = _client.build_client(
                self.settings,
                model_set_version=self.model_set_version,
                model_trace=self.model_trace,
                queue_type=self.intake.queue_class(made),
                logger=self._lib_logger,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._outage.failed(exc)
            return False
        queue = made[0] if made else None
        direct: DirectReader | None = None
        if self.settings.mqtt.receive_path == "direct":
            direct = DirectReader(
                client,
                self.intake.deliver_direct,
                hold_max=_client.INCOMING_QUEUE_MAX,
                on_full=self.intake.count_drop,
                clock=self.intake.clock,
            )
            direct.install()
        subscribed = False
        self._client = client
        self._acks = Acks(client, self.log)
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
                self._outage.connected()
                if self.on_connect is not None:
                    self._connect_task = asyncio.create_task(self._run_on_connect())
                if direct is not None:
                    direct.release()  # what came while subscribing, then each as it comes
                self._receiver = asyncio.create_task(self.intake.receive(client, queue))
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
                self._outage.failed(exc, self._relay.last, was_connected=subscribed)
        finally:
            self._set_disconnected()
            self._client = None
            if self._acks is not None:
                self._acks.close()
        if direct is not None:
            direct.release()  # acknowledged to the broker already: hand them over too
        if queue is not None:
            # aiomqtt stops iterating at a disconnect even with messages still queued; they
            # were acknowledged to the broker already, so hand them over rather than lose them.
            self.intake.drain(queue)
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
        m = self.settings.mqtt
        granted = await client.subscribe(
            subscribe_requests(self.subscriptions, m.qos, v5=m.protocol == "5")
        )
        for topic, code in zip(self.subscriptions, granted, strict=False):
            if subscription_refused(code):
                self.log.error("mqtt_subscribe_refused", topic=topic, reason=str(code))

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
        properties: MessageProperties | None = None,
        timeout: float = 10.0,
    ) -> bool:
        """True once the broker acknowledged (PUBACK for QoS 1); False, never raises, otherwise.

        Awaits the acknowledgement in the caller's task, never in the receive loop. A False
        after a timeout may still be delivered later (paho keeps the message in flight):
        delivery is at-least-once, so consumers de-duplicate alerts by their ``alert_id``.
        Properties are MQTT 5 only and silently left out on MQTT 3.1.1.
        """
        return await self.start_publish(
            topic, payload, qos=qos, retain=retain, properties=properties, timeout=timeout
        )

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
        """:meth:`publish` in two parts: a QoS >= 1 PUBLISH is queued for the socket before
        this returns (ahead of anything published after it), and awaiting the returned
        coroutine, which must be awaited, gives what :meth:`publish` returns."""
        client = self._client
        if client is None or not self.connected:
            return _returns(False)
        ok, props = self._paho_properties(topic, properties)
        if not ok:
            return _returns(False)
        if qos > 0 and self._acks is not None:  # the PUBACK's code decides
            try:
                pending = self._acks.send(topic, payload, qos, retain, props)
            except (aiomqtt.MqttError, ValueError) as exc:
                return _returns(self._publish_failed(topic, exc))
            return self._settle(topic, timeout, self._acks.acknowledged(pending))
        # The bound also covers aiomqtt's wait for a free slot (MAX_CONCURRENT_CALLS).
        sending = client.publish(
            topic, payload, qos=qos, retain=retain, properties=props, timeout=timeout
        )
        return self._settle(topic, timeout, sending)

    async def _settle(self, topic: str, timeout: float, sending: Awaitable[None]) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await sending
        except PublishRefused:
            return False  # logged by Acks, rate-limited
        except TimeoutError:
            self.log.debug("mqtt_publish_timeout", topic=topic, timeout=timeout)
            return False
        except (aiomqtt.MqttError, ValueError) as exc:
            return self._publish_failed(topic, exc)
        return True

    def _publish_failed(self, topic: str, exc: Exception) -> bool:
        if isinstance(exc, ValueError):  # invalid topic or QoS: a bug, but do not crash
            self.log.error("mqtt_publish_invalid", topic=topic, error=str(exc))
        else:
            self.log.debug("mqtt_publish_failed", topic=topic, error=str(exc))
        return False

    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> bool:
        """Hand the message to paho now; True if it was queued for the socket.

        No task, no future, no acknowledgement awaited: for QoS 0 messages whose loss is
        counted by the caller (scores). False (never raises) when not connected, when paho
        refuses it, or for an invalid topic, payload or properties.
        """
        client = self._client
        if client is None or not self.connected:
            return False
        ok, props = self._paho_properties(topic, properties)
        if not ok:
            return False
        try:
            return _client.send_nowait(client, topic, payload, qos, retain, props)
        except (ValueError, TypeError) as exc:  # invalid topic, QoS or payload: a bug
            self.log.error("mqtt_publish_invalid", topic=topic, error=str(exc))
            return False

    @property
    def publish_backlog(self) -> int:
        """Packets queued in paho but not yet written to the socket (0 when disconnected)."""
        client = self._client
        return _client.out_backlog(client) if client is not None else 0

    def _paho_properties(
        self, topic: str, properties: MessageProperties | None
    ) -> tuple[bool, Properties | None]:
        """(True, paho's properties or None); (False, None) if they cannot be built.

        MQTT 5 only: on 3.1.1 properties are left out silently.
        """
        if self.settings.mqtt.protocol != "5" or properties is None:
            return True, None
        try:
            return True, publish_properties(properties)
        except Exception as exc:  # ours (ValueError) or paho's MQTTException
            self.log.error("mqtt_publish_bad_properties", topic=topic, error=str(exc))
            return False, None

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

    def _set_disconnected(self) -> None:
        self._connected.clear()
        self.metrics.broker_connected.set(0)
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        self._connect_task = None
        self._receiver = None


async def _returns(value: bool) -> bool:
    return value
