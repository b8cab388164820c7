"""Alarm-system KPIs per unit, the figures EEMUA 191 / ISA-18.2 alarm audits ask for.

* **rate**: alarms raised in the last 10 minutes (ISA-18.2: ~1 per 10 min is acceptable,
  more than 10 is a flood);
* **chattering**: alarms with at least 3 transitions (raise or clear) in the last minute;
* **standing**: alarms active for more than 24 hours;
* **flood periods**: 10-minute windows with more than ``flood_max`` raises (counted once
  per window, when it crosses the bound; the flood guard's held-back raises included);
* shelved and out-of-service counts come from the lifecycle state itself.

Raise times are step times of the alerts; the windows are evaluated at ``now``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

RATE_WINDOW_S = 600.0
CHATTER_WINDOW_S = 60.0
CHATTER_TRANSITIONS = 3
STANDING_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class UnitKpis:
    rate_10min: int
    chattering: int
    standing: int
    flood_periods: int
    in_flood: bool


class AlarmKpis:
    """Time series of alarm transitions, bounded by the longest window they are asked for."""

    def __init__(self, flood_max: int = 10) -> None:
        self._flood_max = flood_max
        self._raises: dict[str, deque[float]] = {}
        self._transitions: dict[tuple[str, str], deque[float]] = {}
        self._flood_periods: dict[str, int] = {}
        #: unit -> end of the flood window being counted (a window counts once).
        self._flood_until: dict[str, float] = {}

    def transition(self, unit: str, alarm: str, ts: float, *, raised: bool) -> None:
        t = self._transitions.setdefault((unit, alarm), deque())
        t.append(ts)
        _trim(t, ts - CHATTER_WINDOW_S)
        if raised:
            self.raised(unit, ts)

    def raised(self, unit: str, ts: float, count: int = 1) -> None:
        """``count`` raises at ``ts`` (more than one: a flood guard summary's held-back ones)."""
        r = self._raises.setdefault(unit, deque())
        r.extend([ts] * count)
        _trim(r, ts - RATE_WINDOW_S)
        if len(r) > self._flood_max and ts >= self._flood_until.get(unit, float("-inf")):
            self._flood_periods[unit] = self._flood_periods.get(unit, 0) + 1
            self._flood_until[unit] = ts + RATE_WINDOW_S

    def values(self, unit: str, now: float, active_since: Iterable[float]) -> UnitKpis:
        """KPIs of the unit at ``now``; ``active_since``: raise times of its active alarms."""
        r = self._raises.get(unit, deque())
        _trim(r, now - RATE_WINDOW_S)
        chattering = 0
        for (u, _), t in list(self._transitions.items()):
            if u != unit:
                continue
            _trim(t, now - CHATTER_WINDOW_S)
            if not t:
                del self._transitions[(u, _)]
            elif len(t) >= CHATTER_TRANSITIONS:
                chattering += 1
        standing = sum(1 for since in active_since if now - since > STANDING_S)
        return UnitKpis(
            rate_10min=len(r),
            chattering=chattering,
            standing=standing,
            flood_periods=self._flood_periods.get(unit, 0),
            in_flood=len(r) > self._flood_max,
        )


def _trim(times: deque[float], before: float) -> None:
    while times and times[0] < before:
        times.popleft()
