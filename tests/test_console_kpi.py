"""ISA-18.2 KPIs on hand-made event sequences."""

from __future__ import annotations

from typing import Any

from edge_console.kpi import alarm_rate, chattering, standing, summarise


def ev(ts: float, alarm: str = "anomaly", unit: str = "unit1", state: str = "raised") -> dict:
    return {"ts": ts, "state": state, "plant": "p1", "unit": unit, "alarm": alarm, "kind": "x"}


def test_rate_per_10_minutes_and_floods() -> None:
    events: list[dict[str, Any]] = [ev(10.0 + i) for i in range(12)]  # 12 in the first bucket
    events += [ev(700.0), ev(1300.0, state="cleared"), ev(1310.0, state="acknowledged")]
    rate = alarm_rate(events, 0.0, 1800.0)
    assert rate == [(0.0, 12), (600.0, 1), (1200.0, 0), (1800.0, 0)]
    s = summarise(events, 0.0, 1800.0)
    assert s.alarms == 13 and s.per_10_minutes_peak == 12
    assert s.flood_intervals == 1 and s.percent_time_in_flood == 25.0
    assert s.top_alarms[0] == ("p1/unit1/anomaly", 13)


def test_chattering_needs_three_raises_within_a_minute() -> None:
    events = [ev(0, "limit/a"), ev(30, "limit/a"), ev(59, "limit/a")]  # chatters
    events += [ev(0, "limit/b"), ev(40, "limit/b"), ev(101, "limit/b")]  # 3 raises, 101 s apart
    events += [ev(0, "limit/c", "unit2"), ev(10, "limit/c", "unit1"), ev(20, "limit/c", "unit3")]
    assert chattering(events) == [("p1/unit1/limit/a", 3)]


def test_standing_alarms() -> None:
    alarms = [
        {"alarm": "a", "active": True, "raised_at": "2026-11-28T00:00:00Z"},
        {"alarm": "b", "active": True, "raised_at": "2026-11-29T00:00:00Z"},
        {"alarm": "c", "active": False, "raised_at": "2026-11-27T00:00:00Z"},
    ]
    now = 1795910400.0 + 3600  # 2026-11-29T01:00:00Z
    assert [a["alarm"] for a in standing(alarms, now)] == ["a"]
