"""Alarm logic: per-step decisions in, raised/cleared episodes out, with a flood guard.

A single anomalous step is not worth waking anyone up for, and an alarm that flaps on and
off is worse than none, so every alarm (one per unit, kind and subject) is debounced:

* it raises after ``on_delay`` consecutive anomalous decisions,
* clears after ``off_delay`` consecutive normal ones,
* and is never raised again while active.

Kinds and subjects: ``anomaly`` (the ensemble decision; one per unit), ``limit`` (one per
sensor with configured limits: subject ``"<sensor>"``), ``sensor_stale`` (the step could
not be scored for lack of fresh data) and ``bad_quality`` (one per sensor: its latest
reading was impossible — outside the instrument range or not a number — and no valid one
has come since).

Levels (``limit``): an alarm with levels is one alarm at its most severe breached level
(ISA-18.2 precedence, see :mod:`edge_agent.pipeline.limits`). While it is active, a new level that
holds for ``on_delay`` consecutive steps (an escalation, e.g. HI → HIHI) or ``off_delay``
steps (a step down, HIHI → HI) moves the alarm to it: the event is ``raised`` again with the
*same* ``alert_id`` and ``raised_ts``, the step's ``ts``, the new level and its severity.
Subscribers tell such an update from the first raise by ``ts != raised_at``.

Severity (fixed when the episode is raised or changes level; the cleared message repeats it):

* ``limit``: HIHI or LOLO → ``high``; HI or LO → ``medium``;
* ``anomaly``: from the raising step's strength (the calibrated ensemble score: the fused
  margin over its threshold in units of the models' normal tails; for votes the mean
  margin over each model's threshold in units of its scale): ≥ 3 → ``high``, ≥ 1 →
  ``medium``, else ``low``;
* ``sensor_stale`` → ``low``; ``bad_quality`` → ``medium``;
* ``flood`` summary → the highest severity among the alerts it held back.

Flood guard: at most ``flood_max`` raised alerts per unit per window of
``flood_window_seconds`` (a window starts at the first raise after the previous window);
further raises are suppressed (``alerts_suppressed``; their episodes still run, silently,
and their clears are not sent either) and, when the window ends, summarised once.

All times are step times (data time), so live and replay raise the same alarms.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from edge_agent.config import AlarmSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alerts import SEVERITIES, Severity

#: Severity per limit level.
LIMIT_SEVERITY: dict[str, Severity] = {
    "HIHI": "high",
    "LOLO": "high",
    "HI": "medium",
    "LO": "medium",
}


def anomaly_severity(strength: float) -> Severity:
    if strength >= 3.0:
        return "high"
    if strength >= 1.0:
        return "medium"
    return "low"


def alarm_key(kind: str, subject: str) -> str:
    """The operator-facing name of one alarm: ``kind``, or ``kind/<sensor>`` with a subject.

    The one place that names alarms (alerts, the retained alarm list, commands). A limit
    subject of the form ``"<sensor>:<LEVEL>"`` names its sensor: operators address the
    sensor's limit alarm, not each level.
    """
    sensor = subject.split(":", 1)[0]
    return f"{kind}/{sensor}" if sensor else kind


def alert_id(agent_id: str, unit: str, kind: str, subject: str, raised_ts: float) -> str:
    """Deterministic id of one episode: a restarted agent replaying the same data agrees."""
    key = f"{agent_id}\x1f{unit}\x1f{kind}\x1f{subject}\x1f{round(raised_ts * 1e6)}"
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """An alarm changed state at step ``ts``; ``publish`` is False when the flood guard held it."""

    unit: str
    kind: str
    subject: str
    state: Literal["raised", "cleared"]
    alert_id: str
    ts: float
    raised_ts: float
    severity: Severity
    publish: bool
    #: The alarm's level after this event (alarms with levels only, e.g. ``"HIHI"``).
    level: str | None = None

    @property
    def level_change(self) -> bool:
        """A ``raised`` event of an alarm that was already active (a new level)."""
        return self.state == "raised" and self.ts != self.raised_ts


@dataclass(frozen=True, slots=True)
class FloodSummary:
    unit: str
    alert_id: str
    window_start: float
    window_end: float
    suppressed: int
    by_kind: dict[str, int]
    severity: Severity


class _Alarm:
    __slots__ = (
        "active",
        "alert_id",
        "level",
        "level_run",
        "pending_level",
        "published",
        "raised_ts",
        "rank",
        "run",
        "severity",
    )

    def __init__(self) -> None:
        self.active = False
        self.run = 0
        self.alert_id = ""
        self.raised_ts = 0.0
        self.severity: Severity = "low"
        self.published = False
        self.level: str | None = None
        #: A level other than ``level`` seen on the last ``level_run`` consecutive steps.
        self.pending_level: str | None = None
        self.level_run = 0
        self.rank = 0


@dataclass(slots=True)
class _FloodWindow:
    start: float
    end: float
    raised: int = 0
    suppressed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    severity: Severity = "low"


_NONE_ACTIVE: dict[str, int] = {}


class AlarmBook:
    """All alarms of all units of one agent."""

    def __init__(self, settings: AlarmSettings, agent_id: str, metrics: Metrics) -> None:
        self._on = settings.on_delay
        self._off = settings.off_delay
        self._flood_max = settings.flood_max
        self._flood_window = settings.flood_window_seconds
        self._agent_id = agent_id
        self._metrics = metrics
        self._alarms: dict[tuple[str, str, str], _Alarm] = {}
        #: unit -> kind -> number of active alarms of that kind
        self._active: dict[str, dict[str, int]] = {}
        self._floods: dict[str, _FloodWindow] = {}

    def update(
        self,
        unit: str,
        kind: str,
        subject: str,
        anomalous: bool,
        ts: float,
        severity: Severity = "low",
        level: str | None = None,
        level_rank: int = 0,
    ) -> AlarmEvent | None:
        """Feed one step's decision; returns the event when the alarm raises, changes level
        or clears.

        ``severity`` is used only if this decision raises the alarm or moves it to
        ``level`` (the step's level, for alarms with levels; ``level_rank`` orders levels:
        a move to a higher rank is an escalation and debounced by ``on_delay``, a move down
        by ``off_delay``).
        """
        key = (unit, kind, subject)
        alarm = self._alarms.get(key)
        if alarm is None:
            if not anomalous:
                return None  # an alarm never anomalous needs no state
            alarm = self._alarms[key] = _Alarm()
        if not alarm.active:
            if not anomalous:
                del self._alarms[key]  # the run of anomalous decisions is broken
                return None
            alarm.run += 1
            if alarm.run < self._on:
                return None
            alarm.active, alarm.run = True, 0
            alarm.alert_id = alert_id(self._agent_id, unit, kind, subject, ts)
            alarm.raised_ts, alarm.severity, alarm.level = ts, severity, level
            alarm.rank = level_rank
            alarm.published = self._admit(unit, kind, ts, severity)
            counts = self._active.setdefault(unit, {})
            counts[kind] = counts.get(kind, 0) + 1
            if alarm.published:
                self._metrics.alerts_raised.labels(kind).inc()
            return AlarmEvent(
                unit,
                kind,
                subject,
                "raised",
                alarm.alert_id,
                ts,
                ts,
                severity,
                alarm.published,
                level,
            )
        if anomalous:
            alarm.run = 0
            if level is None or level == alarm.level:
                alarm.pending_level, alarm.level_run = None, 0
                return None
            return self._change_level(alarm, unit, kind, subject, ts, severity, level, level_rank)
        alarm.pending_level, alarm.level_run = None, 0
        alarm.run += 1
        if alarm.run < self._off:
            return None
        alarm.active, alarm.run = False, 0
        self._active[unit][kind] -= 1
        if alarm.published:
            self._metrics.alerts_cleared.labels(kind).inc()
        event = AlarmEvent(
            unit,
            kind,
            subject,
            "cleared",
            alarm.alert_id,
            ts,
            alarm.raised_ts,
            alarm.severity,
            alarm.published,
            alarm.level,
        )
        del self._alarms[key]
        return event

    def _change_level(
        self,
        alarm: _Alarm,
        unit: str,
        kind: str,
        subject: str,
        ts: float,
        severity: Severity,
        level: str,
        rank: int,
    ) -> AlarmEvent | None:
        if alarm.pending_level == level:
            alarm.level_run += 1
        else:
            alarm.pending_level, alarm.level_run = level, 1
        needed = self._on if rank >= alarm.rank else self._off
        if alarm.level_run < needed:
            return None
        alarm.level, alarm.severity, alarm.rank = level, severity, rank
        alarm.pending_level, alarm.level_run = None, 0
        return AlarmEvent(
            unit,
            kind,
            subject,
            "raised",
            alarm.alert_id,
            ts,
            alarm.raised_ts,
            severity,
            alarm.published,
            level,
        )

    def is_active(self, unit: str, kind: str) -> bool:
        """Whether any alarm of this kind (any subject) is active for the unit."""
        return self._active.get(unit, {}).get(kind, 0) > 0

    def active_kinds(self, unit: str) -> dict[str, int]:
        """Kind -> number of active alarms of that kind, for the unit (read-only view)."""
        return self._active.get(unit, _NONE_ACTIVE)

    def active_subjects(self, unit: str, kind: str) -> list[str]:
        return [s for (u, k, s), a in self._alarms.items() if u == unit and k == kind and a.active]

    # -- flood guard -----------------------------------------------------------------------

    def _admit(self, unit: str, kind: str, ts: float, severity: Severity) -> bool:
        window = self._floods.get(unit)
        if window is None or ts >= window.end:
            window = self._floods[unit] = _FloodWindow(ts, ts + self._flood_window)
        if window.raised < self._flood_max:
            window.raised += 1
            return True
        window.suppressed += 1
        window.by_kind[kind] = window.by_kind.get(kind, 0) + 1
        if SEVERITIES.index(severity) > SEVERITIES.index(window.severity):
            window.severity = severity
        self._metrics.alerts_suppressed.labels(kind).inc()
        return False

    def end_flood_window(self, unit: str, ts: float) -> FloodSummary | None:
        """Close the unit's flood window if it ended by ``ts``; its summary if it held any back.

        Call before a step's updates with the step time, and periodically with the clock,
        so that a summary also comes out when the unit has gone quiet.
        """
        window = self._floods.get(unit)
        if window is None or ts < window.end:
            return None
        del self._floods[unit]
        if not window.suppressed:
            return None
        return FloodSummary(
            unit=unit,
            alert_id=alert_id(self._agent_id, unit, "flood", "", window.start),
            window_start=window.start,
            window_end=window.end,
            suppressed=window.suppressed,
            by_kind=dict(window.by_kind),
            severity=window.severity,
        )

    def flood_units(self) -> list[str]:
        return list(self._floods)
