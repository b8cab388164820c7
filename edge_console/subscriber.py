"""The console's MQTT connection: subscribe to every plant's streams, publish commands.

A fixed client id and a persistent session (MQTT 5 ``clean_start=False`` with a session
expiry, 3.1.1 ``clean_session=False``), so alerts published while the console or the broker
was down are delivered when it is back, and nothing is missing from the archive. Reconnects
with the agent's back-off. Bad messages are counted by reason and logged (rate-limited),
never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import aiomqtt
import orjson

from edge_agent.daemon.mqtt import backoff_delays, tls_context
from edge_agent.daemon.mqtt.properties import connect_properties  # the console is aiomqtt too
from edge_agent.logging_setup import get_logger

from .config import ConsoleSettings
from .state import LiveState, parse_ts
from .topics import TopicMap, TopicRef

_LOG_EVERY_S = 60.0
MAX_PAYLOAD_BYTES = 1 << 20


class ArchiveSink(Protocol):
    """Where alert events and scores go to be stored (see :mod:`edge_console.writer`)."""

    def add_event(self, doc: dict[str, Any]) -> None: ...

    def add_score(self, plant: str, unit: str, doc: dict[str, Any]) -> None: ...


class Subscriber:
    def __init__(
        self,
        settings: ConsoleSettings,
        state: LiveState,
        sink: ArchiveSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.state = state
        self.sink = sink
        self.topics = TopicMap(settings)
        self.clock = clock
        self.log = get_logger(component="console_mqtt")
        self.rejected: Counter[str] = Counter()
        self.received = 0
        self.connects = 0
        self._last_reject_log: dict[str, float] = {}
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    def stop(self) -> None:
        self._stop.set()

    def _client_for(self) -> aiomqtt.Client:
        m = self.settings.mqtt
        v5 = m.protocol == "5"
        session: dict[str, Any]
        if v5:
            props = connect_properties(m.session_expiry_seconds)
            session = {"clean_start": False, "properties": props}
        else:
            session = {"clean_session": False}
        return aiomqtt.Client(
            m.host,
            m.port,
            identifier=self.settings.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            username=m.username,
            password=m.resolved_password() if m.username is not None else None,
            keepalive=m.keepalive,
            tls_context=tls_context(m.tls) if m.tls.enabled else None,
            timeout=10.0,
            **session,
        )

    async def run(self) -> None:
        """Connect, subscribe, dispatch; reconnect with back-off until :meth:`stop`."""
        m = self.settings.mqtt
        delays = backoff_delays(m.reconnect_min_seconds, m.reconnect_max_seconds)
        while not self._stop.is_set():
            try:
                async with self._client_for() as client:
                    self._client = client
                    for topic in self.topics.filters():
                        await client.subscribe(topic, qos=1)
                    self.connects += 1
                    self._connected.set()
                    delays = backoff_delays(m.reconnect_min_seconds, m.reconnect_max_seconds)
                    self.log.info("console_mqtt_connected", host=m.host, port=m.port)
                    await self._consume(client)
            except aiomqtt.MqttError as exc:
                self.log.warning("console_mqtt_disconnected", error=str(exc))
            except OSError as exc:  # unreadable password / TLS files
                self.log.error("console_mqtt_config_error", error=str(exc))
            finally:
                self._client = None
                self._connected.clear()
            if self._stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), next(delays))

    async def _consume(self, client: aiomqtt.Client) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            messages = aiter(client.messages)
            while True:
                nxt = asyncio.ensure_future(anext(messages))
                done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    return
                message = nxt.result()
                self.handle(str(message.topic), bytes(message.payload or b""))
        finally:
            stop.cancel()

    # -- decoding -------------------------------------------------------------------------

    def _reject(self, reason: str, topic: str) -> None:
        self.rejected[reason] += 1
        now = self.clock()
        if now - self._last_reject_log.get(reason, -1e18) >= _LOG_EVERY_S:
            self._last_reject_log[reason] = now
            self.log.warning(
                "console_message_rejected", reason=reason, topic=topic, total=self.rejected[reason]
            )

    def handle(self, topic: str, payload: bytes) -> None:
        """Decode one message and feed it to the live state and the archive."""
        self.received += 1
        ref = self.topics.parse(topic)
        if ref is None:
            self._reject("unknown_topic", topic)
            return
        if ref.stream == "alarms" and not payload:
            self.state.on_alarm_list(ref.plant, ref.name, None)  # retained list cleared
            return
        if len(payload) > MAX_PAYLOAD_BYTES:
            self._reject("oversized", topic)
            return
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._reject("bad_json", topic)
            return
        if ref.stream == "sensor" and isinstance(doc, int | float) and not isinstance(doc, bool):
            doc = {"value": doc}  # a bare number means "now", as for the agent
        if not isinstance(doc, dict):
            self._reject("not_an_object", topic)
            return
        try:
            self._dispatch(ref, doc)
        except (KeyError, TypeError, ValueError, AttributeError):
            self._reject(f"bad_{ref.stream}", topic)

    def _dispatch(self, ref: TopicRef, doc: dict[str, Any]) -> None:
        if ref.stream in ("telemetry", "sensor"):
            self._readings(ref, doc)
        elif ref.stream == "scores":
            self.state.on_scores(ref.plant, ref.name, doc)
            if self.sink is not None:
                self.sink.add_score(ref.plant, ref.name, doc)
        elif ref.stream == "alerts":
            if not isinstance(doc.get("alert_id"), str) or not isinstance(doc.get("state"), str):
                raise ValueError("alert without alert_id/state")
            self.state.on_alert(ref.plant, ref.name, doc)
            if self.sink is not None:
                self.sink.add_event({"plant": ref.plant, "unit": ref.name, **doc})
        elif ref.stream == "alarms":
            if not isinstance(doc.get("alarms"), list):
                raise ValueError("alarm list without alarms")
            self.state.on_alarm_list(ref.plant, ref.name, doc)
        elif ref.stream == "status":
            self.state.on_status(ref.plant, ref.name, doc)
        else:
            self.state.on_reply(ref.plant, ref.name, doc)

    def _readings(self, ref: TopicRef, doc: dict[str, Any]) -> None:
        ts = parse_ts(doc["ts"]) if "ts" in doc else self.clock()
        if ts is None:
            raise ValueError("bad ts")
        raw = doc["values"] if ref.stream == "telemetry" else {ref.sensor: doc["value"]}
        values = {
            str(k): float(v)
            for k, v in raw.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        self.state.on_readings(ref.plant, ref.name, ts, values)

    # -- publishing -----------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> bool:
        """QoS 1 publish; False when not connected or not acknowledged within ``timeout``."""
        client = self._client
        if client is None or not self.connected:
            return False
        try:
            await asyncio.wait_for(client.publish(topic, payload, qos=1), timeout)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self.log.warning("console_publish_failed", topic=topic, error=str(exc))
            return False
        return True
