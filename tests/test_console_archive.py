"""The console's archive, the same suite on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg")

from postgres import PostgresServer

from edge_console.archive import Archive, alarm_name, event_row, make_engine, metadata
from edge_console.config import DatabaseSettings
from edge_console.writer import ArchiveWriter


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'db' / 'console.sqlite'}")
    else:
        engine = make_engine(request.getfixturevalue("postgres_server").url)
        metadata.drop_all(engine)
    arch = Archive(engine)
    arch.create()
    yield arch
    engine.dispose()


def alert(alert_id: str, state: str, ts: str = "2026-11-29T05:08:51.000Z", **extra: Any) -> dict:
    doc = {
        "alert_id": alert_id,
        "plant": "p1",
        "unit": "unit1",
        "kind": "limit",
        "state": state,
        "severity": "high",
        "ts": ts,
        "raised_at": "2026-11-29T05:08:51.000Z",
        "score": None,
        "models": {},
        "top_sensors": [],
        "limit": {"sensor": "steam_temperature", "level": "HIHI", "limit": 580.0, "value": 583.5},
        "stale_sensors": [],
        "flood": None,
        "model_set_version": "20261129-1a2b3c4d",
        "agent_id": "edge-01",
        "resent": False,
        "received_at": None,
    }
    doc.update(extra)
    return doc


def test_events_are_idempotent_on_alert_id_and_transition(archive: Archive) -> None:
    raised = event_row(alert("a" * 32, "raised"), 1.0)
    cleared = event_row(alert("a" * 32, "cleared", ts="2026-11-29T05:09:30.000Z"), 2.0)
    assert archive.write_events([raised, cleared]) == (2, 0)
    # The outbox resends, and MQTT redelivers: nothing new.
    resent = event_row(alert("a" * 32, "raised", resent=True), 3.0)
    assert archive.write_events([resent, cleared]) == (0, 2)
    ack = event_row(alert("a" * 32, "acknowledged", operator="alice", comment="seen"), 4.0)
    assert archive.write_events([ack]) == (1, 0)
    rows = archive.events()
    assert [r["state"] for r in rows] == ["cleared", "acknowledged", "raised"] or [
        r["state"] for r in rows
    ] == ["acknowledged", "cleared", "raised"]
    assert archive.event_count() == 3
    by_state = {r["state"]: r for r in rows}
    assert by_state["raised"]["resent"] is False  # the first copy is kept, append-only
    assert by_state["raised"]["alarm"] == "limit/steam_temperature"
    assert by_state["raised"]["sensor"] == "steam_temperature"
    assert by_state["raised"]["value"] == pytest.approx(583.5)
    assert by_state["raised"]["limit_value"] == pytest.approx(580.0)
    assert by_state["raised"]["model_set_version"] == "20261129-1a2b3c4d"
    assert "HIHI" in by_state["raised"]["message"]
    assert by_state["acknowledged"]["operator"] == "alice"
    assert by_state["acknowledged"]["comment"] == "seen"


def test_event_filters(archive: Archive) -> None:
    rows = [
        event_row(alert("1" * 32, "raised", ts="2026-11-29T05:00:00Z"), 0),
        event_row(alert("2" * 32, "raised", ts="2026-11-29T06:00:00Z", unit="unit2"), 0),
        event_row(
            alert("3" * 32, "raised", ts="2026-11-29T07:00:00Z", severity="low", kind="anomaly"),
            0,
        ),
    ]
    archive.write_events(rows)
    assert {r["alert_id"][0] for r in archive.events(units=["unit2"])} == {"2"}
    assert {r["alert_id"][0] for r in archive.events(severities=["low"])} == {"3"}
    since = rows[1]["ts"]
    assert {r["alert_id"][0] for r in archive.events(since=since)} == {"2", "3"}
    assert {r["alert_id"][0] for r in archive.events(until=since)} == {"1", "2"}
    assert [r["alert_id"][0] for r in archive.events(limit=2)] == ["3", "2"]


def test_score_history_merges_buckets_and_keeps_retention_and_bound(archive: Archive) -> None:
    def bucket(b: float, mean: float, peak: float, steps: int = 10) -> dict[str, Any]:
        return {
            "plant": "p1",
            "unit": "unit1",
            "bucket": b,
            "steps": steps,
            "score_mean": mean,
            "score_max": peak,
            "anomalous_steps": 1,
        }

    archive.write_scores([bucket(1000.0, 1.0, 2.0)])
    archive.write_scores([bucket(1000.0, 3.0, 5.0)])  # the same bucket again, e.g. after restart
    (row,) = archive.scores("p1", "unit1")
    assert row["steps"] == 20
    assert row["score_mean"] == pytest.approx(2.0)
    assert row["score_max"] == pytest.approx(5.0)
    assert row["anomalous_steps"] == 2

    archive.write_scores([bucket(1000.0 + 10 * i, 0.0, 0.0) for i in range(1, 300)])
    assert archive.score_count() == 300
    # Retention: everything before 1000 + 10*100 goes; the cap then keeps the newest 150.
    removed = archive.prune_scores(
        now=1000.0 + 10 * 100 + 3600, retention_seconds=3600, max_rows=150
    )
    assert removed == 150
    buckets = [r["bucket"] for r in archive.scores("p1", "unit1")]
    assert len(buckets) == 150
    assert buckets[0] == 1000.0 + 10 * 150 and buckets[-1] == 1000.0 + 10 * 299


def test_writer_downsamples_scores_and_counts_duplicates(archive: Archive) -> None:
    async def scenario() -> ArchiveWriter:
        writer = ArchiveWriter(archive, DatabaseSettings(score_bucket_seconds=10))
        for i in range(35):  # steps at t=100..134: buckets 100, 110, 120, 130 (open)
            writer.add_score(
                "p1",
                "unit1",
                {"ts": 100.0 + i, "score": float(i), "decision": i % 10 == 0},
            )
        writer.add_event({"plant": "p1", "unit": "unit1", **alert("b" * 32, "raised")})
        writer.add_event({"plant": "p1", "unit": "unit1", **alert("b" * 32, "raised")})
        writer.add_event({"plant": "p1", "unit": "unit1", "alert_id": "x"})  # no state/ts
        assert await writer.flush()
        return writer

    writer = asyncio.run(scenario())
    c = writer.counters
    assert (c.events_written, c.events_duplicate, c.events_rejected) == (1, 1, 1)
    rows = archive.scores("p1", "unit1")
    assert [r["bucket"] for r in rows] == [100.0, 110.0, 120.0]
    assert [r["steps"] for r in rows] == [10, 10, 10]
    assert rows[1]["score_mean"] == pytest.approx(14.5)
    assert rows[1]["score_max"] == pytest.approx(19.0)
    assert [r["anomalous_steps"] for r in rows] == [1, 1, 1]


def test_alarm_name_follows_the_contract() -> None:
    assert alarm_name({"kind": "anomaly", "limit": None}) == "anomaly"
    assert alarm_name({"kind": "limit", "limit": {"sensor": "s1"}}) == "limit/s1"
    assert alarm_name({"kind": "bad_quality", "alarm": "bad_quality/steam_pressure"}) == (
        "bad_quality/steam_pressure"
    )
    with pytest.raises(ValueError):
        event_row({"alert_id": "a", "state": "raised", "ts": "yesterday"}, 0)


def test_writer_buffers_and_retries_through_a_database_restart(
    postgres_server: PostgresServer,
) -> None:
    engine = make_engine(postgres_server.url)
    metadata.drop_all(engine)
    arch = Archive(engine)
    arch.create()
    settings = DatabaseSettings(
        buffer_max_rows=50, flush_interval_seconds=0.05, retry_max_seconds=0.2
    )

    async def scenario() -> ArchiveWriter:
        writer = ArchiveWriter(arch, settings)
        task = asyncio.create_task(writer.run())
        writer.add_event({"plant": "p1", "unit": "unit1", **alert("0" * 32, "raised")})
        for _ in range(100):
            if writer.counters.events_written:
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(postgres_server.stop, "immediate")
        try:
            for i in range(1, 60):  # 59 while the database is down: 9 more than the buffer
                writer.add_event({"plant": "p1", "unit": "unit1", **alert(f"{i:032x}", "raised")})
            for _ in range(100):
                if writer.counters.write_failures >= 2:
                    break
                await asyncio.sleep(0.05)
            assert not writer.counters.database_ok
            assert writer.pending == 50
        finally:
            await asyncio.to_thread(postgres_server.start)
        for _ in range(200):
            if writer.pending == 0 and writer.counters.database_ok:
                break
            await asyncio.sleep(0.05)
        writer.stop()
        await task
        return writer

    writer = asyncio.run(scenario())
    c = writer.counters
    assert c.write_failures >= 2 and c.database_ok
    assert c.dropped_events == 9  # counted, and the oldest went first
    assert c.events_written == 51
    stored = {r["alert_id"] for r in arch.events(limit=1000)}
    assert len(stored) == 51
    assert f"{1:032x}" not in stored and f"{59:032x}" in stored and "0" * 32 in stored
    engine.dispose()
