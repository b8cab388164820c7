"""Buffers between the MQTT stream and the database: nothing lost while the database is down.

Events and closed score buckets wait in bounded in-memory queues; a background task writes
them in a worker thread every ``flush_interval_seconds``. When the database fails, the rows
stay queued and the writer retries with exponential back-off up to ``retry_max_seconds``.
Only when a queue is full are the oldest rows dropped, and every one is counted
(``dropped_events`` / ``dropped_scores``) and logged, rate-limited.

Scores are downsampled on the way in: one bucket per unit per ``score_bucket_seconds``
holding the mean, the max and how many steps were anomalous.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_agent.logging_setup import get_logger

from .archive import Archive, event_row
from .config import DatabaseSettings
from .state import parse_ts

_LOG_EVERY_S = 30.0
_PRUNE_EVERY_S = 60.0


@dataclass
class _Bucket:
    start: float
    steps: int = 0
    total: float = 0.0
    scored: int = 0
    peak: float | None = None
    anomalous: int = 0

    def add(self, score: float | None, decision: bool | None) -> None:
        self.steps += 1
        if score is not None:
            self.scored += 1
            self.total += score
            self.peak = score if self.peak is None else max(self.peak, score)
        if decision:
            self.anomalous += 1


@dataclass
class WriterCounters:
    events_written: int = 0
    events_duplicate: int = 0
    events_rejected: int = 0
    scores_written: int = 0
    dropped_events: int = 0
    dropped_scores: int = 0
    write_failures: int = 0
    last_error: str | None = None
    database_ok: bool = True
    pruned_scores: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class ArchiveWriter:
    """The subscriber's :class:`~edge_console.subscriber.ArchiveSink`, writing in batches."""

    def __init__(
        self,
        archive: Archive,
        settings: DatabaseSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.archive = archive
        self.settings = settings
        self.clock = clock
        self.log = get_logger(component="console_archive")
        self.counters = WriterCounters()
        self._events: deque[dict[str, Any]] = deque()
        self._scores: deque[dict[str, Any]] = deque()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._last_log = -1e18
        self._last_prune = -1e18
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._events) + len(self._scores)

    # -- intake (called from the subscriber, on the event loop) --------------------------------

    def add_event(self, doc: dict[str, Any]) -> None:
        try:
            row = event_row(doc, self.clock())
        except ValueError as exc:
            self.counters.events_rejected += 1
            self._warn("console_event_rejected", error=str(exc))
            return
        if len(self._events) >= self.settings.buffer_max_rows:
            self._events.popleft()
            self.counters.dropped_events += 1
            self._warn("console_archive_buffer_full", dropped_events=self.counters.dropped_events)
        self._events.append(row)
        self._wake.set()

    def add_score(self, plant: str, unit: str, doc: dict[str, Any]) -> None:
        ts = parse_ts(doc.get("ts"))
        if ts is None:
            return
        width = self.settings.score_bucket_seconds
        start = ts - ts % width
        key = (plant, unit)
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.start != start:
            self._close(key, bucket)
            bucket = None
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(start)
        score = doc.get("score")
        bucket.add(float(score) if isinstance(score, int | float) else None, doc.get("decision"))

    def _close(self, key: tuple[str, str], bucket: _Bucket) -> None:
        if len(self._scores) >= self.settings.buffer_max_rows:
            self._scores.popleft()
            self.counters.dropped_scores += 1
            self._warn("console_archive_buffer_full", dropped_scores=self.counters.dropped_scores)
        self._scores.append(
            {
                "plant": key[0],
                "unit": key[1],
                "bucket": bucket.start,
                "steps": bucket.steps,
                "score_mean": bucket.total / bucket.scored if bucket.scored else None,
                "score_max": bucket.peak,
                "anomalous_steps": bucket.anomalous,
            }
        )

    def close_buckets(self) -> None:
        """Queue every open bucket (at shutdown, or in tests)."""
        for key, bucket in list(self._buckets.items()):
            self._close(key, bucket)
        self._buckets.clear()

    # -- writing ------------------------------------------------------------------------------

    def _warn(self, event: str, **fields: Any) -> None:
        now = self.clock()
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            self.log.warning(event, **fields)

    async def flush(self) -> bool:
        """Write what is queued; False (rows kept) when the database failed."""
        events = list(self._events)
        scores = list(self._scores)
        if not events and not scores:
            return True
        try:
            if events:
                inserted, duplicate = await asyncio.to_thread(self.archive.write_events, events)
                for _ in events:
                    self._events.popleft()
                self.counters.events_written += inserted
                self.counters.events_duplicate += duplicate
            if scores:
                written = await asyncio.to_thread(self.archive.write_scores, scores)
                for _ in scores:
                    self._scores.popleft()
                self.counters.scores_written += written
        except Exception as exc:  # any driver error: keep the rows and retry
            self.counters.write_failures += 1
            self.counters.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            if self.counters.database_ok:
                self.log.error("console_database_down", error=self.counters.last_error)
            self.counters.database_ok = False
            return False
        if not self.counters.database_ok:
            self.log.info("console_database_back", pending=self.pending)
        self.counters.database_ok = True
        return True

    async def _maybe_prune(self) -> None:
        now = self.clock()
        if now - self._last_prune < _PRUNE_EVERY_S:
            return
        self._last_prune = now
        s = self.settings
        try:
            removed = await asyncio.to_thread(
                self.archive.prune_scores, now, s.score_retention_days * 86400, s.score_max_rows
            )
        except Exception as exc:
            self._warn("console_prune_failed", error=str(exc))
            return
        self.counters.pruned_scores += removed

    async def run(self) -> None:
        """Flush periodically, back off while the database is down, until :meth:`stop`."""
        delay = self.settings.flush_interval_seconds
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            ok = await self.flush()
            if ok:
                delay = self.settings.flush_interval_seconds
                await self._maybe_prune()
            else:
                delay = min(self.settings.retry_max_seconds, max(delay * 2, 0.25))
        self.close_buckets()
        if not await self.flush() and self.pending:
            self.log.error("console_archive_unwritten_at_exit", pending=self.pending)

    def stop(self) -> None:
        self._stop.set()
