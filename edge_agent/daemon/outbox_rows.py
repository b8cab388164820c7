"""The outbox's rows: the SQLite schema (and its in-place migration), and the item types.

Split from :mod:`edge_agent.daemon.outbox` so the storage state machine stays readable. The
metadata columns (``alert_id``, ``model_set_version``, ``arrival``) exist so that publishing
never parses an alert's JSON; :meth:`OutboxItem.is_resend` is the one resend rule.
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson

from edge_agent.logging_setup import get_logger
from edge_agent.pipeline.alerts import Alert
from edge_agent.pipeline.timestamps import parse_timestamp

# AUTOINCREMENT never reuses an id, so a late ack cannot delete a newer row.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " topic TEXT NOT NULL,"
    " payload BLOB NOT NULL,"
    " qos INTEGER NOT NULL,"
    " created REAL NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " alert_id TEXT,"
    " model_set_version TEXT,"
    " arrival REAL)",
    "CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created)",
)
#: Columns added after the first release; an older file gets them (and a backfill) on open.
_ADDED_COLUMNS = {"alert_id": "TEXT", "model_set_version": "TEXT", "arrival": "REAL"}
COLUMNS = "id, topic, payload, qos, created, attempts, alert_id, model_set_version, arrival"
INSERT = (
    "INSERT INTO outbox (topic, payload, qos, created, attempts, alert_id, model_set_version,"
    " arrival) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class AlertMeta:
    """What publishing needs to know about an alert without parsing its JSON again."""

    alert_id: str | None = None
    model_set_version: str | None = None
    #: When the reading behind the alert arrived (Unix s), for the reading→alert latency.
    arrival: float | None = None

    @classmethod
    def from_payload(cls, payload: bytes) -> AlertMeta:
        """Read the three fields of a stored alert once (migrating rows written before the
        columns existed). Leniently: a row an older agent wrote need not satisfy today's
        full contract to keep its id and version on resend."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return cls()
        if not isinstance(doc, dict):
            return cls()
        alert_id, version = doc.get("alert_id"), doc.get("model_set_version")
        received = doc.get("received_at")
        arrival = (
            parse_timestamp(received)
            if isinstance(received, int | float | str) and not isinstance(received, bool)
            else None
        )
        return cls(
            alert_id if isinstance(alert_id, str) else None,
            version if isinstance(version, str) else None,
            arrival,
        )

    @classmethod
    def of(cls, alert: Alert) -> AlertMeta:
        return cls(alert.alert_id, alert.model_set_version, alert.arrival)


@dataclass(frozen=True)
class OutgoingAlert:
    """An alert on its way into the outbox: topic, JSON payload and its metadata."""

    topic: str
    payload: bytes
    meta: AlertMeta = AlertMeta()


@dataclass(frozen=True)
class OutboxItem:
    id: int
    topic: str
    payload: bytes
    qos: int
    created: float
    attempts: int
    meta: AlertMeta = AlertMeta()

    def is_resend(self, connected_at: float = float("-inf")) -> bool:
        """The resend rule: an earlier attempt was made, or the alert was stored before the
        current connection came up (it may have gone out on the previous one unacknowledged).
        """
        return self.attempts > 0 or self.created < connected_at

    def wire_payload(self, connected_at: float = float("-inf")) -> bytes:
        """What to publish: marked ``"resent": true`` when :meth:`is_resend`."""
        return mark_resent(self.payload) if self.is_resend(connected_at) else self.payload


def mark_resent(payload: bytes) -> bytes:
    """Set ``"resent": true`` in an alert's JSON; anything that is not a JSON object is kept."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    if not isinstance(doc, dict) or doc.get("resent") is True:
        return payload
    doc["resent"] = True
    return orjson.dumps(doc)


def item_from_row(row: tuple[Any, ...]) -> OutboxItem:
    return OutboxItem(
        id=int(row[0]),
        topic=str(row[1]),
        payload=as_bytes(row[2]),
        qos=int(row[3]),
        created=float(row[4]),
        attempts=int(row[5]),
        meta=AlertMeta(
            alert_id=None if row[6] is None else str(row[6]),
            model_set_version=None if row[7] is None else str(row[7]),
            arrival=None if row[8] is None else float(row[8]),
        ),
    )


def as_bytes(value: object) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[call-overload]


def meta_row(meta: AlertMeta) -> tuple[str | None, str | None, float | None]:
    return meta.alert_id, meta.model_set_version, meta.arrival


def migrate(conn: sqlite3.Connection) -> None:
    """Give an outbox file from an older release the metadata columns, filled in once from
    the stored JSON, so publishing never parses an alert to find its id."""
    have = {str(row[1]) for row in conn.execute("PRAGMA table_info(outbox)")}
    missing = [name for name in _ADDED_COLUMNS if name not in have]
    if not missing:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name in missing:
            conn.execute(f"ALTER TABLE outbox ADD COLUMN {name} {_ADDED_COLUMNS[name]}")
        rows = conn.execute("SELECT id, payload FROM outbox").fetchall()
        conn.executemany(
            "UPDATE outbox SET alert_id = ?, model_set_version = ?, arrival = ? WHERE id = ?",
            [(*meta_row(AlertMeta.from_payload(as_bytes(p))), int(i)) for i, p in rows],
        )
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    get_logger(component="outbox").info("outbox_migrated", added=missing, rows=len(rows))
