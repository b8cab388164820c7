"""The running console: live state, MQTT subscriber, archive and its writer, users.

One object the pages share. :meth:`Console.run` runs the subscriber and the writer beside
the web server until it stops, then flushes what is buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from .archive import Archive, make_engine
from .config import ConsoleSettings
from .state import LiveState
from .subscriber import Subscriber
from .writer import ArchiveWriter


@dataclass
class Console:
    settings: ConsoleSettings
    state: LiveState
    archive: Archive
    writer: ArchiveWriter
    subscriber: Subscriber

    @classmethod
    def create(cls, settings: ConsoleSettings) -> Console:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        password = settings.database.password
        engine = make_engine(
            settings.database_url, password.get_secret_value() if password else None
        )
        archive = Archive(engine)
        state = LiveState(window_seconds=settings.web.live_window_seconds)
        writer = ArchiveWriter(archive, settings.database)
        subscriber = Subscriber(settings, state, writer)
        return cls(settings, state, archive, writer, subscriber)

    def health(self) -> dict[str, Any]:
        c = self.writer.counters
        return {
            "broker_connected": self.subscriber.connected,
            "messages_received": self.subscriber.received,
            "messages_rejected": dict(self.subscriber.rejected),
            "database_ok": c.database_ok,
            "archive_pending": self.writer.pending,
            "events_written": c.events_written,
            "events_duplicate": c.events_duplicate,
            "events_rejected": c.events_rejected,
            "scores_written": c.scores_written,
            "dropped_events": c.dropped_events,
            "dropped_scores": c.dropped_scores,
            "write_failures": c.write_failures,
            "last_database_error": c.last_error,
            "units": len(self.state.units),
            "agents": len(self.state.agents),
        }

    async def create_schema(self) -> None:
        """Create the tables; keep retrying while the database is not reachable yet."""
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(self.archive.create)
                return
            except Exception as exc:
                self.writer.counters.database_ok = False
                self.writer.counters.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self.writer.log.error(
                    "console_database_unreachable", error=self.writer.counters.last_error
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.database.retry_max_seconds)

    async def run_background(self, stop: asyncio.Event) -> None:
        """Subscriber and writer until ``stop``; buffered rows are flushed at the end."""
        schema = asyncio.create_task(self.create_schema())
        sub = asyncio.create_task(self.subscriber.run(), name="console-mqtt")
        stopped = asyncio.create_task(stop.wait())
        writer: asyncio.Task[None] | None = None
        try:
            await asyncio.wait({schema, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if schema.done():
                self.writer.counters.database_ok = True
                writer = asyncio.create_task(self.writer.run(), name="console-writer")
                await stopped
        finally:
            schema.cancel()
            stopped.cancel()
            self.subscriber.stop()
            self.writer.stop()
            for task in (sub, writer):
                if task is None:
                    continue
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)
            self.archive.engine.dispose()
