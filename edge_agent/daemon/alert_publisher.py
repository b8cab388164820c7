"""Alerts out: the outbox is drained to MQTT in order, each alert deleted on its PUBACK.

Alerts are put in the outbox before anything is published (so a crash or a dead broker loses
nothing) and published oldest first; the PUBACKs are awaited in the publisher's own task
(:meth:`AlertPublisher.run`), so a slow broker never stalls intake or scoring. When nothing
is in flight, :meth:`AlertPublisher.put` hands the first window of PUBLISH packets to the
client at once, so a tick's alerts are queued for the socket ahead of its scores (the
server publishes those right after): traced in a 125-unit burst, alerts had gone out behind
all 125 scores and two loop rounds (the publisher's wake-up, then a task per alert).

Whether an alert is a resend is :meth:`OutboxItem.is_resend`'s rule; the metadata comes from
the outbox's columns, so no alert JSON is parsed here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import Transport, alert_properties
from edge_agent.daemon.outbox import Outbox, OutboxItem, OutgoingAlert
from edge_agent.logging_setup import get_logger
from edge_agent.metrics import Metrics

#: Alerts published before their PUBACKs are awaited (paho's default in-flight window
#: is 20; aiomqtt warns above its pending-calls threshold).
IN_FLIGHT = 16

AlertHook = Callable[[OutboxItem, bytes], None]


@dataclass(slots=True)
class _Window:
    """Alerts handed to the client together, with what each needs once acknowledged."""

    items: list[OutboxItem]
    payloads: list[bytes]
    resends: list[bool]
    acks: list[Coroutine[Any, Any, bool]]


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
        #: A window :meth:`put` started, for :meth:`drain` to finish.
        self._started: _Window | None = None
        #: One drain at a time (the publisher's task, and the server's at shutdown).
        self._draining = asyncio.Lock()

    def put(self, alerts: Iterable[OutgoingAlert]) -> int:
        """Store alerts (durably), start publishing them if nothing is in flight, and wake
        the publisher; returns how many were stored."""
        stored = self.outbox.put_many([(a.topic, a.payload, 1, a.meta) for a in alerts])
        if stored:
            if not self._draining.locked() and self._started is None and self.link.connected:
                self._started = self._start_window()
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
        ``alert_id``). One window is in flight at a time: the one :meth:`put` started, or the
        next taken here.
        """
        async with self._draining:
            while True:
                window, self._started = self._started, None
                if window is None:
                    if not self.link.connected:
                        return
                    window = self._start_window()
                if window is None or not await self._finish_window(window):
                    return

    def _start_window(self) -> _Window | None:
        """Hand the oldest pending alerts (up to :data:`IN_FLIGHT`) to the client now."""
        items = self.outbox.pending(limit=IN_FLIGHT)
        if not items:
            return None
        resends = [item.is_resend(self.connected_at) for item in items]
        payloads = [item.wire_payload(self.connected_at) for item in items]
        self.outbox.mark_attempts([item.id for item in items])
        acks = [self._publish(item, payload) for item, payload in zip(items, payloads, strict=True)]
        return _Window(items, payloads, resends, acks)

    async def _finish_window(self, window: _Window) -> bool:
        """Await the window's PUBACKs and forget what was delivered; True if all of it was."""
        results = await asyncio.gather(*window.acks)
        done = len(results) if all(results) else results.index(False)
        items = window.items
        self.outbox.ack_many([item.id for item in items[:done]])
        now = self.clock()
        for item, payload, resend in zip(
            items[:done], window.payloads[:done], window.resends[:done], strict=True
        ):
            self.metrics.alerts_published.inc()
            arrival = item.meta.arrival
            if arrival is not None and not resend:
                self.metrics.reading_to_alert_seconds.observe(max(0.0, now - arrival))
            if self.on_published is not None:
                self.on_published(item, payload)
        return done == len(items)

    def _publish(self, item: OutboxItem, payload: bytes) -> Coroutine[Any, Any, bool]:
        mqtt = self.settings.mqtt
        meta = item.meta
        props = None
        if mqtt.protocol == "5" and meta.alert_id is not None:
            props = alert_properties(
                meta.alert_id, meta.model_set_version or "", mqtt.alert_expiry_seconds
            )
        return self.link.start_publish(item.topic, payload, qos=item.qos, properties=props)
