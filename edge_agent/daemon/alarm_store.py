"""Alarm lifecycle state on disk: alarm states, shelves and out-of-service marks.

One SQLite file beside the outbox (``alarms.sqlite`` in ``state_dir``), in WAL mode. Every
change is committed before the agent replies ``ok`` or publishes, so it survives a crash or a
SIGKILL. ``synchronous=NORMAL`` (unlike the outbox's FULL) spares the alert path an fsync per
alarm transition; the price is that a power cut may lose the last few changes. Writes happen
only on lifecycle changes (commands, alarm transitions): synchronous calls on the event loop.

Storage trouble never stops the agent: the state is kept in memory, the error is logged once
per kind and counted (``alarm_store_errors_total``), and later writes try the file again.
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson

from edge_agent.logging_setup import get_logger
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alarm_state import AlarmEntry, Shelve

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS alarms ("
    " unit TEXT NOT NULL, alarm TEXT NOT NULL, doc BLOB NOT NULL, PRIMARY KEY (unit, alarm))",
    "CREATE TABLE IF NOT EXISTS out_of_service ("
    " unit TEXT NOT NULL, sensor TEXT NOT NULL, PRIMARY KEY (unit, sensor))",
)


def entry_doc(e: AlarmEntry) -> bytes:
    s = e.shelved
    return orjson.dumps(
        {
            "kind": e.kind,
            "active": e.active,
            "acknowledged": e.acknowledged,
            "alert_id": e.alert_id,
            "severity": e.severity,
            "raised_at": e.raised_at,
            "message": e.message,
            "sensors": list(e.sensors),
            "shelved": None
            if s is None
            else {
                "by": s.by,
                "until": s.until,
                "one_shot": s.one_shot,
                "comment": s.comment,
                "at": s.at,
            },
            "annunciated": e.annunciated,
            "held": None if e.held is None else e.held.decode("utf-8"),
        }
    )


def entry_from_doc(unit: str, alarm: str, raw: bytes) -> AlarmEntry:
    d: dict[str, Any] = orjson.loads(raw)
    s = d["shelved"]
    return AlarmEntry(
        unit=unit,
        alarm=alarm,
        kind=str(d["kind"]),
        active=bool(d["active"]),
        acknowledged=bool(d["acknowledged"]),
        alert_id=str(d["alert_id"]),
        severity=d["severity"],
        raised_at=float(d["raised_at"]),
        message=str(d["message"]),
        sensors=tuple(str(x) for x in d["sensors"]),
        shelved=None
        if s is None
        else Shelve(
            str(s["by"]),
            None if s["until"] is None else float(s["until"]),
            bool(s["one_shot"]),
            s["comment"],
            float(s["at"]),
        ),
        annunciated=bool(d["annunciated"]),
        held=None if d["held"] is None else str(d["held"]).encode("utf-8"),
    )


class AlarmStore:
    """The :class:`edge_agent.pipeline.lifecycle.StateStore` of the running agent."""

    def __init__(self, path: Path, metrics: Metrics) -> None:
        self.path = path
        self._metrics = metrics
        self._log = get_logger(component="alarm_store", path=str(path))
        self._conn: sqlite3.Connection | None = None
        self._logged: set[str] = set()
        self._connect()

    def load(self) -> tuple[list[AlarmEntry], list[tuple[str, str]]]:
        """Saved alarm entries and (unit, sensor) out-of-service marks ("" = the unit)."""
        conn = self._connect()
        if conn is None:
            return [], []
        entries: list[AlarmEntry] = []
        try:
            rows = conn.execute("SELECT unit, alarm, doc FROM alarms").fetchall()
            marks = conn.execute("SELECT unit, sensor FROM out_of_service").fetchall()
            oos = [(str(u), str(s)) for u, s in marks]
        except sqlite3.Error as exc:
            self._failed("load", exc)
            return [], []
        for unit, alarm, doc in rows:
            try:
                entries.append(entry_from_doc(str(unit), str(alarm), bytes(doc)))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                self._failed("load_row", exc)
        return entries, oos

    def save_alarm(self, entry: AlarmEntry) -> None:
        self._write(
            "INSERT INTO alarms (unit, alarm, doc) VALUES (?, ?, ?)"
            " ON CONFLICT (unit, alarm) DO UPDATE SET doc = excluded.doc",
            (entry.unit, entry.alarm, entry_doc(entry)),
        )

    def delete_alarm(self, unit: str, alarm: str) -> None:
        self._write("DELETE FROM alarms WHERE unit = ? AND alarm = ?", (unit, alarm))

    def save_out_of_service(self, unit: str, sensor: str | None, on: bool) -> None:
        if on:
            self._write(
                "INSERT OR IGNORE INTO out_of_service (unit, sensor) VALUES (?, ?)",
                (unit, sensor or ""),
            )
        else:
            self._write(
                "DELETE FROM out_of_service WHERE unit = ? AND sensor = ?", (unit, sensor or "")
            )

    def close(self) -> None:
        if self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # -- internals -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is not None:
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except (sqlite3.Error, OSError) as exc:
            self._failed("open", exc)
            return None
        self._conn = conn
        return conn

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        conn = self._connect()
        if conn is None:
            return
        try:
            conn.execute(sql, args)
        except (sqlite3.Error, OSError) as exc:
            self._failed("write", exc)
            self.close()  # reopened by the next write

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._metrics.alarm_store_errors.inc()
        key = f"{operation}:{type(exc).__name__}"
        if key in self._logged:
            return
        self._logged.add(key)
        self._log.error(
            "alarm_store_failed",
            operation=operation,
            error=f"{type(exc).__name__}: {exc}",
            effect="alarm states are kept in memory and lost at a restart until storage works",
        )
