"""The systemd watchdog: ``WATCHDOG=1`` only while the tick loop is alive.

A hung agent (a stuck tick, a blocked event loop) stops pinging, so systemd restarts it
after ``WatchdogSec``; a merely idle agent keeps pinging, because the tick loop wakes up on
its own period even without data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from edge_agent.daemon.sdnotify import SystemdNotifier
from edge_agent.logging_setup import get_logger


class Watchdog:
    """Pings systemd every ``WATCHDOG_USEC / 2`` while ``last_tick()`` is recent."""

    def __init__(
        self,
        notifier: SystemdNotifier,
        last_tick: Callable[[], float],
        tick_interval: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self._last_tick = last_tick
        self._tick_interval = tick_interval
        self._monotonic = monotonic
        self.log = get_logger(component="watchdog")

    def alive(self, interval: float) -> bool:
        """The tick loop ran within the last ping interval (or five tick periods)."""
        age = self._monotonic() - self._last_tick()
        return age < max(interval, 5 * self._tick_interval())

    async def run(self) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            if self.alive(interval):
                self.notifier.watchdog()
            else:
                self.log.warning("tick loop stalled; withholding watchdog ping")
