"""ISA-18.2 alarm-management KPIs from the archived events.

ISA-18.2 / EEMUA 191 benchmarks per operator position: about 1 alarm per 10 minutes is
"very likely acceptable", 2 "manageable"; more than 10 alarms in 10 minutes is a *flood*;
an alarm that raises three or more times within a minute is *chattering*; an alarm active
for more than 24 hours is *standing*. Pure functions over event rows (dicts with ``ts``,
``state``, ``plant``, ``unit``, ``alarm``, ``alert_id``, ``raised_at``), so they are tested
without a database.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TEN_MINUTES = 600.0
FLOOD_THRESHOLD = 10
CHATTER_COUNT = 3
CHATTER_WINDOW = 60.0


def _raised(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        (e for e in events if e.get("state") == "raised" and e.get("kind") != "flood"),
        key=lambda e: float(e["ts"]),
    )


def alarm_rate(
    events: Iterable[dict[str, Any]], start: float, end: float, width: float = TEN_MINUTES
) -> list[tuple[float, int]]:
    """(bucket start, alarms raised in it) for every bucket from ``start`` to ``end``."""
    first = start - start % width
    n = max(1, int((end - first) // width) + 1)
    counts = [0] * n
    for e in _raised(events):
        i = int((float(e["ts"]) - first) // width)
        if 0 <= i < n:
            counts[i] += 1
    return [(first + i * width, c) for i, c in enumerate(counts)]


def chattering(
    events: Iterable[dict[str, Any]],
    count: int = CHATTER_COUNT,
    window: float = CHATTER_WINDOW,
) -> list[tuple[str, int]]:
    """Alarms (``plant/unit/alarm``) that raised ``count``+ times within ``window`` seconds,
    with their number of raises, most first."""
    times: dict[str, list[float]] = defaultdict(list)
    for e in _raised(events):
        times[f"{e['plant']}/{e['unit']}/{e['alarm']}"].append(float(e["ts"]))
    out: list[tuple[str, int]] = []
    for name, ts in times.items():
        lo = 0
        for hi in range(len(ts)):
            while ts[hi] - ts[lo] > window:
                lo += 1
            if hi - lo + 1 >= count:
                out.append((name, len(ts)))
                break
    return sorted(out, key=lambda x: (-x[1], x[0]))


def standing(
    alarms: Iterable[dict[str, Any]], now: float, after: float = 24 * 3600.0
) -> list[dict[str, Any]]:
    """Current alarms (from the agents' lists) active for longer than ``after`` seconds."""
    from .state import parse_ts

    out = []
    for a in alarms:
        raised = parse_ts(a.get("raised_at"))
        if a.get("active") and raised is not None and now - raised > after:
            out.append(a)
    return out


@dataclass(frozen=True)
class KpiSummary:
    alarms: int
    hours: float
    per_10_minutes_avg: float
    per_10_minutes_peak: int
    flood_intervals: int
    percent_time_in_flood: float
    chattering: list[tuple[str, int]]
    top_alarms: list[tuple[str, int]]


def summarise(
    events: Sequence[dict[str, Any]], start: float, end: float, top: int = 10
) -> KpiSummary:
    rate = alarm_rate(events, start, end)
    raised = _raised(events)
    floods = sum(1 for _, c in rate if c > FLOOD_THRESHOLD)
    counts = Counter(f"{e['plant']}/{e['unit']}/{e['alarm']}" for e in raised)
    return KpiSummary(
        alarms=len(raised),
        hours=(end - start) / 3600.0,
        per_10_minutes_avg=len(raised) / max(1, len(rate)),
        per_10_minutes_peak=max((c for _, c in rate), default=0),
        flood_intervals=floods,
        percent_time_in_flood=100.0 * floods / max(1, len(rate)),
        chattering=chattering(events),
        top_alarms=counts.most_common(top),
    )
