"""The alert outbox: an alert that cannot be published waits on disk.

Every alert is written to SQLite (WAL journal, ``synchronous=FULL``) *before* it is published,
and deleted when the broker acknowledges it (PUBACK; the delete and the attempt marks are
committed without an fsync of their own: :mod:`edge_agent.daemon.outbox_file` says why).
After a reconnect the backlog goes out oldest first. The outbox is bounded by rows and by age;
what it drops is counted.

Storage trouble (disk full, read-only or vanished state directory, corrupt file) never takes
the agent down: the error is logged once per condition, ``outbox_available`` drops to 0, and
alerts go to a bounded in-memory queue instead, so they are still published and still resent
after a reconnect while the process lives. Every ``retry_seconds`` the outbox tries to reopen
the file; when that works the in-memory alerts are written to disk, in order. A corrupt file is
moved aside (``<name>.corrupt-<unix time>``) and replaced by an empty one.

The API is synchronous on purpose: an insert or delete is tens of microseconds plus one
fsync, and alerts are rare (flood-limited), so calling it on the event loop is fine; a
tick's alerts are stored, and a window of PUBACKs forgotten, in one transaction each.
Item ids are positive for rows on disk and negative for alerts held only in memory. Opening,
checking and moving aside the file, and naming what went wrong, is
:mod:`edge_agent.daemon.outbox_file`; the rows are :mod:`edge_agent.daemon.outbox_rows`.
(About 400 lines: every operation has its disk and its degraded in-memory path, which share
the id mapping; splitting them would split that state.)
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

from edge_agent.daemon.outbox_file import (
    CorruptDatabase,
    condition,
    connect,
    move_aside,
    transaction,
)
from edge_agent.daemon.outbox_rows import (
    COLUMNS,
    INSERT,
    AlertMeta,
    OutboxItem,
    OutgoingAlert,
    item_from_row,
    mark_resent,
    meta_row,
)
from edge_agent.logging_setup import get_logger
from edge_agent.metrics import Metrics

__all__ = ["AlertMeta", "NewAlert", "Outbox", "OutboxItem", "OutgoingAlert", "mark_resent"]

#: An alert to store: topic, payload, QoS and its metadata (None: none known).
NewAlert = tuple[str, bytes, int, AlertMeta | None]


class Outbox:
    """Durable, bounded FIFO of alerts awaiting a PUBACK (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        max_rows: int,
        max_age_seconds: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        memory_fallback_rows: int = 10000,
        retry_seconds: float = 30.0,
    ) -> None:
        if max_rows < 1 or memory_fallback_rows < 1:
            raise ValueError("max_rows and memory_fallback_rows must be >= 1")
        self.path = Path(path)
        self._max_rows = max_rows
        self._max_age = max_age_seconds
        self._metrics = metrics if metrics is not None else Metrics()
        self._clock = clock
        self._memory_rows = min(max_rows, memory_fallback_rows)
        self._retry_seconds = retry_seconds
        self._log = get_logger(component="outbox", path=str(self.path))

        self._conn: sqlite3.Connection | None = None
        self._db_rows = 0
        self._memory: OrderedDict[int, OutboxItem] = OrderedDict()
        self._next_memory_id = -1
        #: memory id -> row id, for acks of alerts moved to disk on recovery.
        self._moved: OrderedDict[int, int] = OrderedDict()
        #: row ids acknowledged while the file was unavailable; deleted on recovery.
        self._deferred_acks: OrderedDict[int, None] = OrderedDict()
        self._conditions_logged: set[str] = set()
        self._next_retry = float("-inf")
        self._closed = False

        self._reopen()
        self._publish_depth()

    # -- public API ---------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """True while alerts cannot be stored on disk (they are kept in memory)."""
        return self._conn is None

    def put(
        self, topic: str, payload: bytes, qos: int = 1, meta: AlertMeta | None = None
    ) -> OutboxItem:
        """Store an alert; when storage works it is on disk (fsynced) before this returns."""
        [item] = self.put_many([(topic, payload, qos, meta)])
        return item

    def put_many(self, alerts: Sequence[NewAlert]) -> list[OutboxItem]:
        """Store alerts in their order, in one transaction: one fsync for a tick's alerts,
        not one each (on an SD card an fsync is milliseconds of a stalled event loop)."""
        if self._closed:
            raise RuntimeError("outbox is closed")
        if not alerts:
            return []
        now = self._clock()
        self._maybe_retry(now)
        entries = [(t, p, q, m if m is not None else AlertMeta()) for t, p, q, m in alerts]
        if self._conn is not None:
            try:
                items = self._put_db(entries, now)
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc, "put")
            else:
                self._publish_depth()
                return items
        items = [self._put_memory(t, p, q, now, m) for t, p, q, m in entries]
        self._publish_depth()
        return items

    def pending(self, limit: int = 100) -> list[OutboxItem]:
        """Up to ``limit`` alerts, oldest first; expired ones are dropped (and counted) first."""
        now = self._clock()
        self._maybe_retry(now)
        items: list[OutboxItem] = []
        if self._conn is not None:
            try:
                self._expire_db(self._conn, now)
                rows = self._conn.execute(
                    f"SELECT {COLUMNS} FROM outbox ORDER BY id LIMIT ?", (limit,)
                ).fetchall()
                items = [item_from_row(row) for row in rows]
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc, "pending")
                items = []
        self._expire_memory(now)
        room = limit - len(items)
        if room > 0:
            items.extend(list(self._memory.values())[:room])
        self._publish_depth()
        return items

    def mark_attempt(self, item_id: int) -> None:
        """Record that the alert is being published (a later resend is then marked ``resent``)."""
        self.mark_attempts([item_id])

    def mark_attempts(self, item_ids: Sequence[int]) -> None:
        """:meth:`mark_attempt` for several alerts, in one transaction.

        While degraded, attempts on rows already on disk are not recorded.
        """
        on_disk: list[tuple[int]] = []
        for item_id in item_ids:
            item_id = self._moved.get(item_id, item_id)
            if item_id < 0:
                old = self._memory.get(item_id)
                if old is not None:
                    self._memory[item_id] = replace(old, attempts=old.attempts + 1)
            else:
                on_disk.append((item_id,))
        if self._conn is None or not on_disk:
            return
        try:
            with transaction(self._conn, durable=False) as conn:
                conn.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", on_disk)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc, "mark_attempt")

    def ack(self, item_id: int) -> None:
        """The broker acknowledged the alert: forget it."""
        self.ack_many([item_id])

    def ack_many(self, item_ids: Sequence[int]) -> None:
        """:meth:`ack` for several alerts, in one transaction (no fsync of its own)."""
        on_disk: list[int] = []
        for item_id in item_ids:
            item_id = self._moved.pop(item_id, item_id)
            if item_id < 0:
                self._memory.pop(item_id, None)
            else:
                on_disk.append(item_id)
        if on_disk and self._conn is None:
            for row_id in on_disk:
                self._defer_ack(row_id)
        elif on_disk:
            rows_before = self._db_rows
            try:
                with transaction(self._conn, durable=False) as conn:
                    for row_id in on_disk:
                        cur = conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                        self._db_rows = max(0, self._db_rows - cur.rowcount)
            except (sqlite3.Error, OSError) as exc:
                self._db_rows = rows_before  # rolled back
                self._fail(exc, "ack")
                for row_id in on_disk:
                    self._defer_ack(row_id)
        self._publish_depth()

    def depth(self) -> int:
        """Alerts waiting: rows on disk (as last known while degraded) plus in-memory ones."""
        return max(0, self._db_rows - len(self._deferred_acks)) + len(self._memory)

    def retry_storage(self) -> bool:
        """Try to reopen the file now (normally done every ``retry_seconds``); True when usable."""
        if self._conn is None:
            self._reopen()
            self._publish_depth()
        return self._conn is not None

    def close(self) -> None:
        """Close the file; in-memory alerts are written to disk first if storage works again."""
        if self._closed:
            return
        if self._conn is None and (self._memory or self._deferred_acks):
            self._reopen()
        if self._memory:
            self._log.warning("outbox_memory_alerts_lost", count=len(self._memory))
        if self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        self._closed = True

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- storage ------------------------------------------------------------------------------

    def _reopen(self) -> None:
        """Open the file (moving a corrupt one aside) and move in-memory alerts onto disk."""
        self._next_retry = self._clock() + self._retry_seconds
        try:
            try:
                conn, self._db_rows = connect(self.path)
            except (sqlite3.DatabaseError, CorruptDatabase) as exc:
                if condition(exc) != "corrupt":
                    raise
                self._quarantine(exc)
                conn, self._db_rows = connect(self.path)
            self._conn = conn
            self._drain_memory_to_disk()
        except (sqlite3.Error, OSError, CorruptDatabase) as exc:
            self._fail(exc, "open")
            return
        if self._conditions_logged:
            self._log.info("outbox_storage_recovered", depth=self.depth())
        self._conditions_logged.clear()
        self._metrics.outbox_available.set(1)

    def _maybe_retry(self, now: float) -> None:
        if self._conn is None and not self._closed and now >= self._next_retry:
            self._reopen()

    def _quarantine(self, exc: BaseException) -> None:
        self._count_error("corrupt", "open", exc, log=False)
        moved_to = move_aside(self.path, int(self._clock()))
        self._log.error(
            "outbox_corrupt_file_moved_aside",
            moved_to=str(moved_to),
            error=str(exc),
            hint="alerts in the damaged file are not resent; a new outbox was created",
        )

    def _put_db(
        self, entries: list[tuple[str, bytes, int, AlertMeta]], now: float
    ) -> list[OutboxItem]:
        rows_before = self._db_rows
        items: list[OutboxItem] = []
        try:
            with transaction(self._conn) as conn:
                self._expire_db(conn, now)
                for topic, payload, qos, meta in entries:
                    cur = conn.execute(INSERT, (topic, payload, qos, now, 0, *meta_row(meta)))
                    row_id = cur.lastrowid
                    assert row_id is not None
                    self._db_rows += 1
                    items.append(OutboxItem(row_id, topic, payload, qos, now, 0, meta))
                self._enforce_row_bound(conn)
        except BaseException:
            self._db_rows = rows_before  # rolled back
            raise
        return items

    def _expire_db(self, conn: sqlite3.Connection, now: float) -> None:
        cur = conn.execute("DELETE FROM outbox WHERE created < ?", (now - self._max_age,))
        if cur.rowcount > 0:
            self._db_rows = max(0, self._db_rows - cur.rowcount)
            self._metrics.outbox_dropped.labels("expired").inc(cur.rowcount)

    def _enforce_row_bound(self, conn: sqlite3.Connection) -> None:
        excess = self._db_rows - self._max_rows
        if excess > 0:
            cur = conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                (excess,),
            )
            self._db_rows -= cur.rowcount
            self._metrics.outbox_dropped.labels("full").inc(cur.rowcount)

    def _drain_memory_to_disk(self) -> None:
        """Apply acks made while degraded, then append in-memory alerts in their order."""
        if not self._memory and not self._deferred_acks:
            return
        rows_before = self._db_rows
        moved: list[tuple[int, int]] = []
        try:
            with transaction(self._conn) as conn:
                for row_id in self._deferred_acks:
                    cur = conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                    self._db_rows -= cur.rowcount
                for item in self._memory.values():
                    cur = conn.execute(
                        INSERT,
                        (
                            item.topic,
                            item.payload,
                            item.qos,
                            item.created,
                            item.attempts,
                            *meta_row(item.meta),
                        ),
                    )
                    assert cur.lastrowid is not None
                    moved.append((item.id, cur.lastrowid))
                    self._db_rows += 1
                self._enforce_row_bound(conn)
        except BaseException:
            self._db_rows = rows_before
            raise
        self._deferred_acks.clear()
        self._memory.clear()
        for memory_id, row_id in moved:
            self._moved[memory_id] = row_id
        while len(self._moved) > self._memory_rows:
            self._moved.popitem(last=False)

    # -- degraded mode ------------------------------------------------------------------------

    def _fail(self, exc: BaseException, operation: str) -> None:
        if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError):
            raise exc  # a bug in the caller (wrong types, wrong thread), not a storage problem
        self._count_error(condition(exc), operation, exc)
        if self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        self._next_retry = self._clock() + self._retry_seconds
        self._metrics.outbox_available.set(0)

    def _count_error(
        self, condition: str, operation: str, exc: BaseException, *, log: bool = True
    ) -> None:
        self._metrics.outbox_errors.inc()
        if condition in self._conditions_logged:
            return
        self._conditions_logged.add(condition)
        if not log:
            return
        self._log.error(
            "outbox_storage_failed",
            condition=condition,
            operation=operation,
            error=f"{type(exc).__name__}: {exc}",
            effect=(
                "alerts are kept in memory (lost if the agent stops) and still published;"
                f" retrying the file every {self._retry_seconds:g}s"
            ),
        )

    def _put_memory(
        self, topic: str, payload: bytes, qos: int, now: float, meta: AlertMeta
    ) -> OutboxItem:
        item = OutboxItem(self._next_memory_id, topic, payload, qos, now, 0, meta)
        self._next_memory_id -= 1
        self._memory[item.id] = item
        self._expire_memory(now)
        while len(self._memory) > self._memory_rows:
            self._memory.popitem(last=False)
            self._metrics.outbox_dropped.labels("full").inc()
        return item

    def _expire_memory(self, now: float) -> None:
        cutoff = now - self._max_age
        expired = [i for i, item in self._memory.items() if item.created < cutoff]
        for item_id in expired:
            del self._memory[item_id]
        if expired:
            self._metrics.outbox_dropped.labels("expired").inc(len(expired))

    def _defer_ack(self, row_id: int) -> None:
        self._deferred_acks[row_id] = None
        while len(self._deferred_acks) > self._memory_rows:
            self._deferred_acks.popitem(last=False)

    def _publish_depth(self) -> None:
        self._metrics.outbox_depth.set(self.depth())
