"""Alerts out: the outbox is drained to MQTT in order, each alert deleted on its PUBACK.

Alerts are put in the outbox before anything is published (so a crash or a dead broker loses
nothing) and published oldest first by :meth:`AlertPublisher.run`; publishing waits for
PUBACKs in its own task, so a slow broker never stalls intake or scoring. Whether an alert is
a resend is :meth:`OutboxItem.is_resend`'s rule; the metadata comes from the outbox's columns,
so no alert JSON is parsed here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import Transport, alert_properties
from edge_agent.daemon.outbox import Outbox, OutboxItem, OutgoingAlert
from edge_agent.logging_setup import get_logger
from edge_agent.metrics import Metrics

#: Alerts published before their PUBACKs are awaited (paho's default in-flight window
#: is 20; aiomqtt warns above its pending-calls threshold).
IN_FLIGHT = 16

AlertHook = Callable[[OutboxItem, bytes], None]


class AlertPublisher:
    """Owns the path outbox → MQTT: storing, draining, resends and their metrics."""

    def __init__(
        self,
        settings: AgentSettings,
        outbox: Outbox,
        link: Transport,
        metrics: Metrics,
        clock: Callable[[], float],
        on_published: AlertHook | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.link = link
        self.metrics = metrics
        self.clock = clock
        self.on_published = on_published
        self.log = get_logger(component="alerts", agent_id=settings.agent_id)
        #: When the current broker connection came up: older alerts count as resends.
        self.connected_at = 0.0
        self._wakeup = asyncio.Event()

    def put(self, alerts: Iterable[OutgoingAlert]) -> int:
        """Store alerts (durably) and wake the publisher; returns how many were stored."""
        stored = self.outbox.put_many([(a.topic, a.payload, 1, a.meta) for a in alerts])
        if stored:
            self._wakeup.set()
        return len(stored)

    def connected(self, at: float) -> None:
        """The link (re)connected: send the backlog."""
        self.connected_at = at
        self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.drain()
            except Exception:
                self.log.exception("publishing alerts failed")
                await asyncio.sleep(1.0)
                self._wakeup.set()

    async def drain(self) -> None:
        """Publish pending alerts oldest first, up to :data:`IN_FLIGHT` at a time.

        The PUBLISH packets of a window go out back to back, in outbox order, and their
        PUBACKs are awaited together (one round trip per window, not per alert: under a
        burst each round trip also waits for the event loop). The outbox is updated once per
        window. At the first failure the rest of the window stays in the outbox, even what
        the broker took after it: it is resent after the failed one, so the order holds and
        the worst case is a duplicate (flagged ``resent``; consumers de-duplicate by
        ``alert_id``).
        """
        while self.link.connected:
            items = self.outbox.pending(limit=IN_FLIGHT)
            if not items:
                return
            resends = [item.is_resend(self.connected_at) for item in items]
            payloads = [item.wire_payload(self.connected_at) for item in items]
            self.outbox.mark_attempts([item.id for item in items])
            sends = [
                asyncio.create_task(self._publish(item, payload))
                for item, payload in zip(items, payloads, strict=True)
            ]
            results = await asyncio.gather(*sends)
            done = len(results) if all(results) else results.index(False)
            self.outbox.ack_many([item.id for item in items[:done]])
            now = self.clock()
            for item, payload, resend in zip(
                items[:done], payloads[:done], resends[:done], strict=True
            ):
                self.metrics.alerts_published.inc()
                arrival = item.meta.arrival
                if arrival is not None and not resend:
                    self.metrics.reading_to_alert_seconds.observe(max(0.0, now - arrival))
                if self.on_published is not None:
                    self.on_published(item, payload)
            if done < len(items):
                return

    async def _publish(self, item: OutboxItem, payload: bytes) -> bool:
        mqtt = self.settings.mqtt
        meta = item.meta
        props = None
        if mqtt.protocol == "5" and meta.alert_id is not None:
            props = alert_properties(
                meta.alert_id, meta.model_set_version or "", mqtt.alert_expiry_seconds
            )
        return await self.link.publish(item.topic, payload, qos=item.qos, properties=props)
