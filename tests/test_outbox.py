"""The alert outbox: durable before publish, bounded, and never fatal when storage fails.

Storage failures are real ones, not mocks: a state "directory" that is a regular file, a corrupt
file, a file-size limit (RLIMIT_FSIZE, the same write errors a full disk gives, and it works
without privileges), and, where the tests may mount (root with CAP_SYS_ADMIN), a genuinely
full tmpfs and a read-only tmpfs. ``chmod`` is useless here because the tests run as root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs
from tmpfs import tmpfs

from edge_agent.daemon.outbox import AlertMeta, Outbox, mark_resent
from edge_agent.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def alert(n: int) -> bytes:
    return orjson.dumps({"alert_id": f"a{n}", "kind": "anomaly", "resent": False})


def failures(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == "outbox_storage_failed"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_put_pending_ack_in_insertion_order(tmp_path: Path, clock: FakeClock) -> None:
    m = Metrics()
    with Outbox(tmp_path / "state" / "outbox.sqlite", 100, 3600, m, clock) as ob:
        items = [ob.put(f"plant/p/u{i}/alerts", alert(i)) for i in range(5)]
        assert [i.id for i in ob.pending()] == [i.id for i in items]
        assert [i.payload for i in ob.pending(limit=2)] == [alert(0), alert(1)]
        assert ob.depth() == 5 and sample(m, "edge_agent_outbox_depth") == 5
        ob.ack(items[1].id)
        ob.ack(items[1].id)  # a duplicate PUBACK changes nothing
        assert [i.topic for i in ob.pending()] == [f"plant/p/u{i}/alerts" for i in (0, 2, 3, 4)]
        assert sample(m, "edge_agent_outbox_depth") == 4
        assert not ob.degraded and sample(m, "edge_agent_outbox_available") == 1
    assert (tmp_path / "state" / "outbox.sqlite").is_file()


def test_survives_sigkill(tmp_path: Path) -> None:
    """A process that dies without close() leaves every put() alert on disk, in order."""
    path = tmp_path / "outbox.sqlite"
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from edge_agent.daemon.outbox import Outbox
        ob = Outbox(Path({str(path)!r}), 100, 3600)
        ids = [ob.put("t", b'{{"n": %d}}' % n).id for n in range(6)]
        ob.mark_attempt(ids[0])
        ob.ack(ids[2])
        os._exit(0)  # like SIGKILL: no close, no atexit, no checkpoint
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    assert Path(f"{path}-wal").exists(), "the data must still be in the un-checkpointed WAL"
    with Outbox(path, 100, 3600) as ob:
        items = ob.pending()
        assert [orjson.loads(i.payload)["n"] for i in items] == [0, 1, 3, 4, 5]
        assert [i.attempts for i in items] == [1, 0, 0, 0, 0]
        assert ob.depth() == 5


def test_row_bound_drops_oldest_and_counts(tmp_path: Path, clock: FakeClock) -> None:
    m = Metrics()
    with Outbox(tmp_path / "o.sqlite", 3, 3600, m, clock) as ob:
        for i in range(5):
            ob.put("t", alert(i))
        assert [i.payload for i in ob.pending()] == [alert(2), alert(3), alert(4)]
        assert sample(m, "edge_agent_outbox_dropped_total", reason="full") == 2
        assert ob.depth() == 3 and sample(m, "edge_agent_outbox_depth") == 3
    with Outbox(tmp_path / "o.sqlite", 3, 3600, m, clock) as ob:
        assert ob.depth() == 3  # the bound held on disk too


def test_age_bound_drops_expired_first(tmp_path: Path, clock: FakeClock) -> None:
    m = Metrics()
    with Outbox(tmp_path / "o.sqlite", 100, 100.0, m, clock) as ob:
        ob.put("t", alert(0))
        clock.now += 60
        ob.put("t", alert(1))
        clock.now += 50  # alert 0 is now 110 s old, alert 1 50 s
        assert [i.payload for i in ob.pending()] == [alert(1)]
        assert sample(m, "edge_agent_outbox_dropped_total", reason="expired") == 1
        assert sample(m, "edge_agent_outbox_depth") == 1


def test_attempts_mark_a_resend(tmp_path: Path, clock: FakeClock) -> None:
    with Outbox(tmp_path / "o.sqlite", 100, 3600, clock=clock) as ob:
        first, second = ob.put("t", alert(0)), ob.put("t", alert(1))
        ob.mark_attempt(first.id)  # published once, then the connection dropped
        again = {i.id: i for i in ob.pending()}
        assert again[first.id].attempts == 1 and again[second.id].attempts == 0
        assert orjson.loads(again[first.id].wire_payload())["resent"] is True
        assert orjson.loads(again[second.id].wire_payload())["resent"] is False


def test_mark_resent_keeps_everything_else() -> None:
    doc = {"alert_id": "x", "score": 0.25, "sensors": ["a", "b"], "resent": False}
    assert orjson.loads(mark_resent(orjson.dumps(doc))) == {**doc, "resent": True}
    assert orjson.loads(mark_resent(b'{"alert_id": "y"}')) == {"alert_id": "y", "resent": True}
    assert mark_resent(b"not json") == b"not json"
    assert mark_resent(b"[1, 2]") == b"[1, 2]"


def test_unusable_directory_degrades_then_recovers(tmp_path: Path, clock: FakeClock) -> None:
    """The state path's parent is a regular file: nothing can be created, even as root."""
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    path = blocker / "outbox.sqlite"
    m = Metrics()
    with capture_logs() as logs:
        ob = Outbox(path, 100, 3600, m, clock, retry_seconds=10)
        assert ob.degraded and sample(m, "edge_agent_outbox_available") == 0
        a, b, c = (ob.put("t", alert(i)) for i in range(3))
        assert a.id < 0  # in memory only
        ob.mark_attempt(a.id)
        ob.ack(b.id)
        clock.now += 11  # a retry is due; it fails again, silently
        d = ob.put("t", alert(3))
        assert [i.id for i in ob.pending()] == [a.id, c.id, d.id]
        assert ob.pending()[0].attempts == 1
        assert sample(m, "edge_agent_outbox_errors_total") == 2
        assert len(failures(logs)) == 1, "one log line per condition, not per failure"
        assert failures(logs)[0]["condition"] == "cannot_open"

        blocker.unlink()
        blocker.mkdir()  # the operator fixed it
        clock.now += 11
        e = ob.put("t", alert(4))
        assert not ob.degraded and sample(m, "edge_agent_outbox_available") == 1
        assert e.id > 0
        pending = ob.pending()
        assert [i.payload for i in pending] == [alert(0), alert(2), alert(3), alert(4)]
        assert pending[0].attempts == 1 and all(i.id > 0 for i in pending)
        ob.ack(a.id)  # a PUBACK for the in-memory id still finds the moved row
        assert ob.depth() == 3 and sample(m, "edge_agent_outbox_depth") == 3
        ob.close()
    assert any(e["event"] == "outbox_storage_recovered" for e in logs)
    with Outbox(path, 100, 3600, clock=clock) as again:
        assert [i.payload for i in again.pending()] == [alert(2), alert(3), alert(4)]


def test_memory_fallback_is_bounded(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "file").write_text("")
    m = Metrics()
    ob = Outbox(tmp_path / "file" / "o.sqlite", 100, 60, m, clock, memory_fallback_rows=3)
    for i in range(5):
        ob.put("t", alert(i))
    assert [i.payload for i in ob.pending()] == [alert(2), alert(3), alert(4)]
    assert sample(m, "edge_agent_outbox_dropped_total", reason="full") == 2
    clock.now += 61
    assert ob.pending() == [] and ob.depth() == 0
    assert sample(m, "edge_agent_outbox_dropped_total", reason="expired") == 3
    ob.close()


def test_close_saves_memory_alerts_when_storage_is_back(tmp_path: Path, clock: FakeClock) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("")
    ob = Outbox(blocker / "o.sqlite", 100, 3600, clock=clock, retry_seconds=1e9)
    ob.put("t", alert(0))
    blocker.unlink()
    blocker.mkdir()
    ob.close()  # no retry was due, but closing tries once more before memory is lost
    with Outbox(blocker / "o.sqlite", 100, 3600, clock=clock) as again:
        assert [i.payload for i in again.pending()] == [alert(0)]


def test_corrupt_file_at_start_is_moved_aside(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.sqlite"
    garbage = b"this is not an SQLite database" * 200
    path.write_bytes(garbage)
    m = Metrics()
    with capture_logs() as logs, Outbox(path, 100, 3600, m, clock) as ob:
        assert not ob.degraded and sample(m, "edge_agent_outbox_available") == 1
        ob.put("t", alert(0))
        assert [i.payload for i in ob.pending()] == [alert(0)]
    (kept,) = tmp_path.glob("o.sqlite.corrupt-*")
    assert kept.read_bytes() == garbage, "the damaged file is kept for inspection"
    assert sample(m, "edge_agent_outbox_errors_total") == 1
    assert [e["moved_to"] for e in logs if e["event"] == "outbox_corrupt_file_moved_aside"] == [
        str(kept)
    ]


def test_corruption_while_running_degrades_then_recovers(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.sqlite"
    m = Metrics()
    with capture_logs() as logs:
        ob = Outbox(path, 100, 3600, m, clock, retry_seconds=5)
        ob.put("t", alert(0))
        # Media failure: database, WAL and shared-memory index all destroyed under us.
        for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            f.write_bytes(os.urandom(f.stat().st_size) if f == path else bytes(f.stat().st_size))
        held = ob.put("t", alert(1))
        assert ob.degraded and held.id < 0
        assert sample(m, "edge_agent_outbox_available") == 0
        assert [e["condition"] for e in failures(logs)] == ["corrupt"]
        assert [i.payload for i in ob.pending()] == [alert(1)]  # still published from memory

        clock.now += 6
        ob.put("t", alert(2))
        assert not ob.degraded and sample(m, "edge_agent_outbox_available") == 1
        assert [i.payload for i in ob.pending()] == [alert(1), alert(2)]
        ob.close()
    assert len(list(tmp_path.glob("o.sqlite.corrupt-*"))) == 1


_FSIZE_SCRIPT = """
import json, resource, signal, sys
from pathlib import Path
from structlog.testing import capture_logs
from edge_agent.metrics import Metrics
from edge_agent.daemon.outbox import Outbox

now = [1000.0]
m = Metrics()
path = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
with capture_logs() as logs:
    ob = Outbox(path, 10_000, 3600, m, lambda: now[0], retry_seconds=5)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    ids = []
    for n in range(400):
        ids.append(ob.put("t", b'{"n": %d, "pad": "%s"}' % (n, b"x" * 4000)).id)
        if ob.degraded:
            break
    ids.append(ob.put("t", b'{"n": %d}' % len(ids)).id)
    degraded_after = len(ids)
    pending_while_degraded = [i.id for i in ob.pending(limit=1000)]
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space is back
    now[0] += 6
    ob.put("t", b'{"n": %d}' % len(ids))
    recovered = not ob.degraded
    ob.close()
again = Outbox(path, 10_000, 3600, clock=lambda: now[0])
print(json.dumps({
    "degraded_after": degraded_after,
    "memory_ids": [i for i in ids if i < 0],
    "pending_while_degraded": pending_while_degraded,
    "recovered": recovered,
    "on_disk": [json.loads(i.payload)["n"] for i in again.pending(limit=1000)],
    "errors": m.registry.get_sample_value("edge_agent_outbox_errors_total"),
    "conditions": [e["condition"] for e in logs if e["event"] == "outbox_storage_failed"],
}))
"""


def test_file_size_limit_degrades_then_recovers(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes fail exactly like a full disk, without privileges."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(tmp_path / "o.sqlite")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["degraded_after"] < 200, "writes beyond the limit must fail"
    assert len(r["memory_ids"]) == 2  # the failed put and the next one went to memory
    assert r["pending_while_degraded"] == r["memory_ids"]
    assert r["recovered"] is True
    assert r["on_disk"] == list(range(r["degraded_after"] + 1)), "nothing lost, order kept"
    assert r["errors"] >= 1 and len(r["conditions"]) == 1


def remount(mountpoint: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mountpoint)], check=True)


def test_full_disk_degrades_then_recovers(tmp_path: Path, clock: FakeClock) -> None:
    m = Metrics()
    with tmpfs(tmp_path / "mnt", 512) as mnt, capture_logs() as logs:
        ob = Outbox(mnt / "o.sqlite", 10_000, 3600, m, clock, retry_seconds=5)
        filler = mnt / "filler"
        with filler.open("wb") as f:  # leave ~60 KiB free
            while (os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize) > 60 * 1024:
                f.write(b"\0" * 4096)
                f.flush()
        payloads: list[bytes] = []
        while not ob.degraded and len(payloads) < 100:
            payloads.append(b'{"n": %d, "pad": "%s"}' % (len(payloads), b"x" * 4000))
            ob.put("t", payloads[-1])
        assert ob.degraded, "a full disk must be noticed"
        assert sample(m, "edge_agent_outbox_available") == 0
        assert [e["condition"] for e in failures(logs)] == ["disk_full"]
        payloads.append(b'{"n": %d}' % len(payloads))
        ob.put("t", payloads[-1])
        assert [i.id for i in ob.pending(limit=1000)][-2:] == [-1, -2]

        filler.unlink()
        clock.now += 6
        assert ob.retry_storage() and sample(m, "edge_agent_outbox_available") == 1
        assert [i.payload for i in ob.pending(limit=1000)] == payloads
        ob.close()
        with Outbox(mnt / "o.sqlite", 10_000, 3600, clock=clock) as again:
            assert again.depth() == len(payloads)


def test_read_only_state_directory_degrades_then_recovers(tmp_path: Path, clock: FakeClock) -> None:
    m = Metrics()
    with tmpfs(tmp_path / "mnt", 1024) as mnt, capture_logs() as logs:
        with Outbox(mnt / "o.sqlite", 100, 3600, clock=clock) as ob:
            ob.put("t", alert(0))
        remount(mnt, "ro")  # e.g. ext4 errors=remount-ro after an I/O error
        ob = Outbox(mnt / "o.sqlite", 100, 3600, m, clock, retry_seconds=5)
        assert ob.degraded and sample(m, "edge_agent_outbox_available") == 0
        ob.put("t", alert(1))
        assert [i.payload for i in ob.pending()] == [alert(1)]
        assert len(failures(logs)) == 1

        remount(mnt, "rw")
        clock.now += 6
        assert [i.payload for i in ob.pending()] == [alert(0), alert(1)]
        assert not ob.degraded
        ob.close()


def test_stored_before_the_connection_came_up_is_a_resend(tmp_path: Path, clock: FakeClock) -> None:
    """The one resend rule production uses: attempted before, or older than the connection."""
    with Outbox(tmp_path / "o.sqlite", 100, 3600, clock=clock) as ob:
        old = ob.put("t", alert(0))
        clock.now += 5
        new = ob.put("t", alert(1))
        connected_at = clock.now - 1  # the link came up between the two
        [a, b] = ob.pending()
        assert a.is_resend(connected_at) and not b.is_resend(connected_at)
        assert orjson.loads(a.wire_payload(connected_at))["resent"] is True
        assert b.wire_payload(connected_at) == alert(1)
        assert (a.id, b.id) == (old.id, new.id)


def test_metadata_is_stored_in_columns(tmp_path: Path, clock: FakeClock) -> None:
    meta = AlertMeta("a7", "ms-3", 123.5)
    with Outbox(tmp_path / "o.sqlite", 100, 3600, clock=clock) as ob:
        ob.put("t", b'{"not": "an alert"}', meta=meta)
    with Outbox(tmp_path / "o.sqlite", 100, 3600, clock=clock) as ob:
        [item] = ob.pending()
        assert item.meta == meta  # from the columns, not from the (unrelated) JSON


def test_an_old_outbox_file_is_migrated_in_place(tmp_path: Path, clock: FakeClock) -> None:
    """A file from before the metadata columns gets them, filled in from the stored JSON."""
    import sqlite3

    from edge_agent.pipeline.alerts import Alert

    path = tmp_path / "o.sqlite"
    doc = Alert(
        alert_id="old-1",
        plant="p",
        unit="u1",
        kind="anomaly",
        state="raised",
        severity="high",
        ts=clock.now - 10,
        raised_at=clock.now - 10,
        model_set_version="ms-old",
        agent_id="a",
        arrival=clock.now - 9.5,
    ).to_json()
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL, qos INTEGER NOT NULL, created REAL NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0)"
    )
    conn.execute(
        "INSERT INTO outbox (topic, payload, qos, created, attempts) VALUES (?, ?, 1, ?, 2)",
        ("t", doc, clock.now - 10),
    )
    conn.execute(
        "INSERT INTO outbox (topic, payload, qos, created, attempts) VALUES ('t', 'junk', 1, ?, 0)",
        (clock.now - 5,),
    )
    conn.commit()
    conn.close()
    with Outbox(path, 100, 3600, clock=clock) as ob:
        first, junk = ob.pending()
        assert first.meta.alert_id == "old-1" and first.meta.model_set_version == "ms-old"
        assert first.meta.arrival == pytest.approx(clock.now - 9.5)
        assert first.attempts == 2 and first.payload == doc
        assert junk.meta == AlertMeta()  # unparseable: kept, published without metadata
    with Outbox(path, 100, 3600, clock=clock) as ob:  # a second open does not migrate again
        assert [i.meta.alert_id for i in ob.pending()] == ["old-1", None]


def test_inserts_are_fsynced_and_bookkeeping_is_not(tmp_path: Path, clock: FakeClock) -> None:
    """An alert's insert commits at ``synchronous=FULL``; attempt marks and deletes commit at
    NORMAL (no fsync on the alert's way to the broker) and leave the connection at FULL."""
    with Outbox(tmp_path / "outbox.sqlite", 100, 3600, Metrics(), clock) as ob:
        conn = ob._conn
        assert conn is not None
        sql: list[str] = []
        conn.set_trace_callback(lambda s: sql.append(" ".join(s.split()).upper()))

        def level_at_commit(run: Callable[[], object]) -> tuple[str, int]:
            """The synchronous level the one COMMIT ran at, and the level left behind."""
            sql.clear()
            run()
            assert sql.count("COMMIT") == 1, sql  # one transaction
            level = "FULL"
            for s in sql[: sql.index("COMMIT")]:
                if s.startswith("PRAGMA SYNCHRONOUS="):
                    level = s.split("=")[1]
            after = int(conn.execute("PRAGMA synchronous").fetchone()[0])
            return level, after

        items: list[Any] = []
        assert level_at_commit(
            lambda: items.extend(ob.put_many([("t", alert(i), 1, None) for i in range(3)]))
        ) == ("FULL", 2)
        assert level_at_commit(lambda: ob.mark_attempts([i.id for i in items])) == ("NORMAL", 2)
        assert [i.attempts for i in ob.pending()] == [1, 1, 1]
        assert level_at_commit(lambda: ob.ack_many([i.id for i in items])) == ("NORMAL", 2)
        conn.set_trace_callback(None)
    with Outbox(tmp_path / "outbox.sqlite", 100, 3600, Metrics(), clock) as ob:
        assert ob.pending() == []  # the deletes landed
