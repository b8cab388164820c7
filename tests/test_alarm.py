"""Alarms: on/off delays, no re-raise, flood guard, stable episode ids."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.config import AlarmSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alarm import (
    AlarmBook,
    AlarmEvent,
    alert_id,
    anomaly_severity,
)

T0 = 1_714_564_800.0


def book(**alarm: Any) -> tuple[AlarmBook, Metrics]:
    metrics = Metrics()
    settings = AlarmSettings(**{"on_delay": 3, "off_delay": 4, **alarm})
    return AlarmBook(settings, "agent-1", metrics), metrics


def feed(
    b: AlarmBook, decisions: list[bool], t0: float = T0, unit: str = "u1", kind: str = "anomaly"
) -> list[tuple[int, AlarmEvent]]:
    events = []
    for i, d in enumerate(decisions):
        e = b.update(unit, kind, "", d, t0 + i, "medium")
        if e is not None:
            events.append((i, e))
    return events


def count(metrics: Metrics, name: str, kind: str) -> float:
    return metrics.registry.get_sample_value(f"edge_agent_{name}_total", {"kind": kind}) or 0.0


def test_raises_after_on_delay_and_clears_after_off_delay() -> None:
    b, metrics = book()
    events = feed(b, [True, True, True, True, False, False, False, False])
    assert [(i, e.state) for i, e in events] == [(2, "raised"), (7, "cleared")]
    raised, cleared = events[0][1], events[1][1]
    assert raised.alert_id == cleared.alert_id
    assert raised.ts == raised.raised_ts == T0 + 2
    assert cleared.ts == T0 + 7 and cleared.raised_ts == T0 + 2
    assert raised.severity == cleared.severity == "medium"
    assert raised.publish and cleared.publish
    assert count(metrics, "alerts_raised", "anomaly") == 1
    assert count(metrics, "alerts_cleared", "anomaly") == 1


def test_a_broken_run_does_not_raise() -> None:
    b, _ = book()
    assert feed(b, [True, True, False, True, True, False, True]) == []
    assert not b.is_active("u1", "anomaly")


def test_no_re_raise_while_active_and_normal_runs_must_be_consecutive_to_clear() -> None:
    b, _ = book()
    decisions = [True] * 10 + [False] * 3 + [True] + [False] * 3 + [True] * 5 + [False] * 4
    events = feed(b, decisions)
    assert [(i, e.state) for i, e in events] == [(2, "raised"), (len(decisions) - 1, "cleared")]


def test_alarms_are_separate_per_unit_kind_and_subject() -> None:
    b, _ = book(on_delay=1)
    assert b.update("u1", "limit", "load:HI", True, T0) is not None
    assert b.update("u1", "limit", "load:HIHI", True, T0) is not None
    assert b.update("u2", "limit", "load:HI", True, T0) is not None
    assert b.update("u1", "anomaly", "", True, T0) is not None
    assert b.update("u1", "limit", "load:HI", True, T0 + 1) is None  # active: no re-raise
    assert sorted(b.active_subjects("u1", "limit")) == ["load:HI", "load:HIHI"]
    assert b.is_active("u1", "limit") and b.is_active("u2", "limit")
    assert not b.is_active("u2", "anomaly")


def test_flood_guard_suppresses_counts_and_summarises() -> None:
    """11 episodes in 10 minutes with flood_max 10 → 1 suppressed, counted, summarised."""
    b, metrics = book(on_delay=1, off_delay=1, flood_max=10, flood_window_seconds=600)
    events = []
    for n in range(11):
        t = T0 + 50 * n  # an episode every 50 s: 11 of them within 550 s
        events.append(b.update("u1", "anomaly", "", True, t, "high" if n == 10 else "low"))
        events.append(b.update("u1", "anomaly", "", False, t + 10))
        assert b.end_flood_window("u1", t + 10) is None  # window still running
    raised = [e for e in events if e is not None and e.state == "raised"]
    cleared = [e for e in events if e is not None and e.state == "cleared"]
    assert len(raised) == len(cleared) == 11
    assert [e.publish for e in raised] == [True] * 10 + [False]
    assert [e.publish for e in cleared] == [True] * 10 + [False]  # its clear is held too
    assert count(metrics, "alerts_raised", "anomaly") == 10
    assert count(metrics, "alerts_cleared", "anomaly") == 10
    assert count(metrics, "alerts_suppressed", "anomaly") == 1
    assert b.end_flood_window("u1", T0 + 599.9) is None
    summary = b.end_flood_window("u1", T0 + 600)
    assert summary is not None
    assert (summary.unit, summary.suppressed, summary.by_kind) == ("u1", 1, {"anomaly": 1})
    assert (summary.window_start, summary.window_end) == (T0, T0 + 600)
    assert summary.severity == "high"  # the worst one held back
    assert summary.alert_id == alert_id("agent-1", "u1", "flood", "", T0)
    assert b.end_flood_window("u1", T0 + 700) is None  # summarised once
    # a new window starts with the next raise
    e = b.update("u1", "anomaly", "", True, T0 + 700)
    assert e is not None and e.publish


def test_flood_guard_counts_all_kinds_per_unit_but_units_separately() -> None:
    b, metrics = book(on_delay=1, flood_max=2)
    assert b.update("u1", "anomaly", "", True, T0).publish  # type: ignore[union-attr]
    assert b.update("u1", "limit", "a:HI", True, T0 + 1).publish  # type: ignore[union-attr]
    held = b.update("u1", "sensor_stale", "", True, T0 + 2)
    assert held is not None and not held.publish
    assert b.update("u2", "anomaly", "", True, T0 + 2).publish  # type: ignore[union-attr]
    assert count(metrics, "alerts_suppressed", "sensor_stale") == 1
    summary = b.end_flood_window("u1", T0 + 10_000)
    assert summary is not None and summary.by_kind == {"sensor_stale": 1}
    assert b.end_flood_window("u2", T0 + 10_000) is None  # nothing held back there


def test_no_summary_when_nothing_was_suppressed() -> None:
    b, _ = book(on_delay=1, flood_max=10)
    feed(b, [True, False, False, False, False])
    assert b.flood_units() == ["u1"]
    assert b.end_flood_window("u1", T0 + 10_000) is None
    assert b.flood_units() == []


def test_alert_ids_are_stable_and_distinct_per_episode() -> None:
    def run() -> list[str]:
        b, _ = book(on_delay=1, off_delay=1)
        return [e.alert_id for _, e in feed(b, [True, False, True, False])]

    first, second = run(), run()
    assert first == second  # deterministic across instances (and restarts)
    assert first[0] == first[1] and first[2] == first[3]  # raised/cleared share the id
    assert first[0] != first[2]  # a new episode gets a new id
    base = alert_id("agent-1", "u1", "anomaly", "", T0)
    assert base == first[0]
    variants = {
        alert_id("agent-2", "u1", "anomaly", "", T0),
        alert_id("agent-1", "u2", "anomaly", "", T0),
        alert_id("agent-1", "u1", "limit", "", T0),
        alert_id("agent-1", "u1", "anomaly", "x", T0),
        alert_id("agent-1", "u1", "anomaly", "", T0 + 1e-3),
    }
    assert base not in variants and len(variants) == 5
    assert len(base) == 32 and int(base, 16) >= 0


@pytest.mark.parametrize(
    ("score", "severity"),
    [(-1.0, "low"), (0.0, "low"), (0.99, "low"), (1.0, "medium"), (2.9, "medium"), (3.0, "high")],
)
def test_anomaly_severity_from_ensemble_score(score: float, severity: str) -> None:
    assert anomaly_severity(score) == severity


def feed_levels(b: AlarmBook, levels: list[str | None]) -> list[tuple[int, AlarmEvent]]:
    """A limit alarm fed with each step's most severe breached level (None: within limits)."""
    from edge_agent.pipeline.alarm import LIMIT_SEVERITY
    from edge_agent.pipeline.limits import LEVEL_RANK

    events = []
    for i, level in enumerate(levels):
        e = b.update(
            "u1",
            "limit",
            "steam_temperature",
            level is not None,
            T0 + i,
            LIMIT_SEVERITY[level] if level else "low",
            level,
            LEVEL_RANK[level] if level else 0,
        )
        if e is not None:
            events.append((i, e))
    return events


def test_a_level_change_is_the_same_episode_raised_again_at_the_new_level() -> None:
    b, metrics = book(on_delay=2, off_delay=3)
    levels = ["HI"] * 3 + ["HIHI"] * 4 + ["HI"] * 4 + [None] * 3
    events = feed_levels(b, levels)
    assert [(i, e.state, e.level, e.severity, e.level_change) for i, e in events] == [
        (1, "raised", "HI", "medium", False),
        (4, "raised", "HIHI", "high", True),  # escalation: on_delay
        (9, "raised", "HI", "medium", True),  # step down: off_delay
        (13, "cleared", "HI", "medium", False),
    ]
    assert len({e.alert_id for _, e in events}) == 1
    assert {e.raised_ts for _, e in events} == {T0 + 1}
    assert count(metrics, "alerts_raised", "limit") == 1
    assert count(metrics, "alerts_cleared", "limit") == 1


def test_a_raise_goes_straight_to_the_level_of_the_raising_step() -> None:
    b, _ = book(on_delay=3, off_delay=3)
    events = feed_levels(b, ["HI", "HIHI", "HIHI", "HIHI", "HIHI"])
    assert [(i, e.state, e.level) for i, e in events] == [(2, "raised", "HIHI")]


def test_level_flapping_shorter_than_the_delays_changes_nothing() -> None:
    b, _ = book(on_delay=3, off_delay=3)
    levels = ["HI"] * 3 + ["HIHI", "HIHI", "HI"] * 4 + ["HIHI"] * 2
    events = feed_levels(b, levels)
    assert [(i, e.state, e.level) for i, e in events] == [(2, "raised", "HI")]
