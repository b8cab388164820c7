"""The alarm archive in a real database, through SQLAlchemy Core (SQLite or PostgreSQL).

Two tables:

* ``alarm_events`` — append-only: one row per (alert id, transition), e.g. ``raised``,
  ``cleared``, ``acknowledged``, ``shelved``. Inserting the same pair again does nothing
  (``ON CONFLICT DO NOTHING`` on the unique key), so MQTT redeliveries and the agent's
  outbox resends are harmless and counted as duplicates.
* ``score_history`` — the ensemble score downsampled to one row per unit per bucket
  (mean, max, steps, anomalous steps), bounded by a retention age and a row cap.

Times are Unix seconds (float) in UTC, which both databases compare and index the same.
Synchronous by design: :mod:`edge_console.writer` runs it in a thread and buffers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from .state import parse_ts

metadata = MetaData()

alarm_events = Table(
    "alarm_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(64), nullable=False),
    Column("state", String(32), nullable=False),
    Column("ts", Float, nullable=False),
    Column("raised_at", Float),
    Column("received_at", Float, nullable=False),
    Column("plant", String(128), nullable=False),
    Column("unit", String(128), nullable=False),
    Column("agent_id", String(128)),
    Column("kind", String(32), nullable=False),
    Column("alarm", String(256), nullable=False),
    Column("severity", String(16)),
    Column("sensor", String(128)),
    Column("value", Float),
    Column("limit_value", Float),
    Column("level", String(8)),
    Column("score", Float),
    Column("message", Text, nullable=False),
    Column("model_set_version", String(64)),
    Column("operator", String(128)),
    Column("comment", Text),
    Column("resent", Boolean, nullable=False, default=False),
    Column("payload", Text, nullable=False),
    UniqueConstraint("alert_id", "state", name="uq_alarm_events_alert_state"),
    Index("ix_alarm_events_ts", "ts"),
    Index("ix_alarm_events_unit_ts", "plant", "unit", "ts"),
)

score_history = Table(
    "score_history",
    metadata,
    Column("plant", String(128), primary_key=True),
    Column("unit", String(128), primary_key=True),
    Column("bucket", Float, primary_key=True),
    Column("steps", Integer, nullable=False),
    Column("score_mean", Float),
    Column("score_max", Float),
    Column("anomalous_steps", Integer, nullable=False),
    Index("ix_score_history_bucket", "bucket"),
)

EVENT_COLUMNS = tuple(c.name for c in alarm_events.columns if c.name != "id")


def alarm_name(doc: dict[str, Any]) -> str:
    """The contract's alarm identifier: ``kind`` or ``kind/subject``."""
    if isinstance(doc.get("alarm"), str) and doc["alarm"]:
        return str(doc["alarm"])
    kind = str(doc.get("kind") or "unknown")
    subject = (doc.get("limit") or {}).get("sensor") or doc.get("sensor") or doc.get("subject")
    return kind if not subject else f"{kind}/{subject}"


def describe(doc: dict[str, Any]) -> str:
    """A one-line human text for an alert event (the agent sends data, not prose)."""
    if isinstance(doc.get("message"), str) and doc["message"]:
        return str(doc["message"])
    kind, state = doc.get("kind"), doc.get("state")
    who = f" by {doc['operator']}" if doc.get("operator") else ""
    limit = doc.get("limit") or {}
    if kind == "limit" and limit:
        text = (
            f"{limit.get('sensor')} {limit.get('level')}: {limit.get('value')} "
            f"(limit {limit.get('limit')})"
        )
    elif kind == "anomaly":
        top = ", ".join(str(t.get("sensor")) for t in doc.get("top_sensors") or [])
        score = doc.get("score")
        text = "anomaly" + (f" score {score:+.2f}" if isinstance(score, int | float) else "")
        text += f" (top: {top})" if top else ""
    elif kind == "sensor_stale":
        text = "stale sensors: " + ", ".join(doc.get("stale_sensors") or []) or "stale sensors"
    elif kind == "flood":
        text = f"flood: {(doc.get('flood') or {}).get('suppressed', '?')} alerts held back"
    else:
        text = str(kind)
    return f"{text} — {state}{who}"


def event_row(doc: dict[str, Any], received_at: float) -> dict[str, Any]:
    """An alert event (plus ``plant``/``unit``) as an ``alarm_events`` row; ValueError if bad."""
    alert_id, state = doc.get("alert_id"), doc.get("state")
    if not isinstance(alert_id, str) or not alert_id or not isinstance(state, str) or not state:
        raise ValueError("alert_id and state are required")
    ts = parse_ts(doc.get("ts"))
    if ts is None:
        raise ValueError("ts is not an RFC 3339 time")
    limit = doc.get("limit") or {}
    score = doc.get("score")
    return {
        "alert_id": alert_id[:64],
        "state": state[:32],
        "ts": ts,
        "raised_at": parse_ts(doc.get("raised_at")),
        "received_at": received_at,
        "plant": str(doc.get("plant")),
        "unit": str(doc.get("unit")),
        "agent_id": doc.get("agent_id"),
        "kind": str(doc.get("kind") or "unknown")[:32],
        "alarm": alarm_name(doc)[:256],
        "severity": doc.get("severity"),
        "sensor": limit.get("sensor") or doc.get("sensor"),
        "value": limit.get("value"),
        "limit_value": limit.get("limit"),
        "level": limit.get("level"),
        "score": float(score) if isinstance(score, int | float) else None,
        "message": describe(doc),
        "model_set_version": doc.get("model_set_version"),
        "operator": doc.get("operator"),
        "comment": doc.get("comment"),
        "resent": bool(doc.get("resent")),
        "payload": orjson.dumps(doc).decode(),
    }


def make_engine(url: str, password: str | None = None) -> Engine:
    parsed = make_url(url)
    if password is not None:
        parsed = parsed.set(password=password)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return create_engine(parsed, connect_args={"timeout": 5})
    connect_args = {"connect_timeout": 5} if parsed.get_backend_name() == "postgresql" else {}
    return create_engine(parsed, pool_pre_ping=True, pool_size=2, connect_args=connect_args)


class Archive:
    """Reads and writes the two tables; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        if engine.dialect.name not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database {engine.dialect.name} (SQLite or PostgreSQL)")

    def create(self) -> None:
        metadata.create_all(self.engine)

    # -- writing --------------------------------------------------------------------------

    def write_events(self, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """Insert events; return (inserted, duplicates). All or nothing on a database error."""
        inserted = 0
        # RETURNING tells inserted from skipped on both databases (rowcount does not).
        stmt = (
            self._insert(alarm_events)
            .on_conflict_do_nothing(index_elements=["alert_id", "state"])
            .returning(alarm_events.c.id)
        )
        with self.engine.begin() as conn:
            for row in rows:
                inserted += len(conn.execute(stmt, row).all())
        return inserted, len(rows) - inserted

    def write_scores(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert score buckets; a bucket already stored is merged (steps add up)."""
        if not rows:
            return 0
        ins = self._insert(score_history)
        excluded = ins.excluded
        t = score_history.c
        stmt = ins.on_conflict_do_update(
            index_elements=["plant", "unit", "bucket"],
            set_={
                "score_mean": (t.score_mean * t.steps + excluded.score_mean * excluded.steps)
                / (t.steps + excluded.steps),
                "score_max": func.max(t.score_max, excluded.score_max)
                if self.engine.dialect.name == "sqlite"
                else func.greatest(t.score_max, excluded.score_max),
                "steps": t.steps + excluded.steps,
                "anomalous_steps": t.anomalous_steps + excluded.anomalous_steps,
            },
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, list(rows))
        return len(rows)

    def prune_scores(self, now: float, retention_seconds: float, max_rows: int) -> int:
        """Delete score rows older than the retention, then the oldest beyond ``max_rows``."""
        removed = 0
        with self.engine.begin() as conn:
            removed += conn.execute(
                delete(score_history).where(score_history.c.bucket < now - retention_seconds)
            ).rowcount
            cutoff = conn.execute(
                select(score_history.c.bucket)
                .order_by(score_history.c.bucket.desc())
                .offset(max_rows)
                .limit(1)
            ).scalar()
            if cutoff is not None:
                removed += conn.execute(
                    delete(score_history).where(score_history.c.bucket <= cutoff)
                ).rowcount
        return removed

    # -- reading --------------------------------------------------------------------------

    def events(
        self,
        *,
        plant: str | None = None,
        units: Iterable[str] | None = None,
        severities: Iterable[str] | None = None,
        states: Iterable[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Events newest first, filtered."""
        c = alarm_events.c
        q = select(*[c[name] for name in ("id", *EVENT_COLUMNS) if name != "payload"])
        if plant is not None:
            q = q.where(c.plant == plant)
        if units:
            q = q.where(c.unit.in_(list(units)))
        if severities:
            q = q.where(c.severity.in_(list(severities)))
        if states:
            q = q.where(c.state.in_(list(states)))
        if since is not None:
            q = q.where(c.ts >= since)
        if until is not None:
            q = q.where(c.ts <= until)
        q = q.order_by(c.ts.desc(), c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def event_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(alarm_events)).scalar_one())

    def scores(self, plant: str, unit: str, since: float | None = None) -> list[dict[str, Any]]:
        t = score_history.c
        q = select(score_history).where(t.plant == plant, t.unit == unit)
        if since is not None:
            q = q.where(t.bucket >= since)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(t.bucket))]

    def score_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(score_history)).scalar_one())
