"""The alarm stage of a tick: one scored (or unscored) step in, the alerts it raises out.

Each step feeds the unit's alarms in a fixed order — flood window, anomaly, limits,
sensor_stale, bad_quality — through the :class:`~edge_agent.pipeline.alarm.AlarmBook`
(delays, deadband, flood suppression); every state change the book publishes becomes an
:class:`~edge_agent.pipeline.alerts.Alert` with its evidence and plain-text message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from edge_agent.pipeline.alarm import (
    LIMIT_SEVERITY,
    AlarmBook,
    AlarmEvent,
    FloodSummary,
    alarm_key,
    anomaly_severity,
)
from edge_agent.pipeline.alerts import Alert, AlertKind, FloodDetail, LimitBreach, Severity
from edge_agent.pipeline.align import ClosedStep
from edge_agent.pipeline.ingest import EventLogger
from edge_agent.pipeline.limits import LEVEL_RANK, SensorLimits
from edge_agent.pipeline.messages import with_message
from edge_agent.pipeline.outcome import StepOutcome

#: Alarm kinds reported per step (``flood`` is per window, not per step).
STEP_ALARM_KINDS: tuple[AlertKind, ...] = ("anomaly", "limit", "sensor_stale", "bad_quality")
#: Severity of a bad-quality alarm: the sensor's readings are impossible, so neither its
#: limit alarms nor the models' view of it can be trusted until it is fixed.
BAD_QUALITY_SEVERITY: Severity = "medium"
#: The alarm states of a unit without any active alarm (shared, read-only: the common case).
_ALL_CLEAR: Mapping[str, bool] = MappingProxyType(dict.fromkeys(STEP_ALARM_KINDS, False))


class StepAlarms:
    """Runs every alarm of a step and builds the alerts they publish."""

    def __init__(
        self,
        book: AlarmBook,
        limits: Mapping[str, list[SensorLimits]],
        plant: str,
        agent_id: str,
        log: EventLogger,
        engineering_units: Callable[[], Mapping[str, str]],
        current_version: Callable[[], str],
    ) -> None:
        self.book = book
        self._limits = limits
        self._plant = plant
        self._agent_id = agent_id
        self.log = log
        self._engineering_units = engineering_units
        self._current_version = current_version

    def run(self, o: StepOutcome, step: ClosedStep, alerts: list[Alert]) -> None:
        """Feed one step to its unit's alarms; its alerts go to ``o.alerts`` and ``alerts``."""
        book = self.book
        summary = book.end_flood_window(o.unit, o.ts)
        if summary is not None:
            o.alerts.append(self.flood_alert(summary))
        if o.decision is not None and o.strength is not None:
            severity = anomaly_severity(o.strength)
            event = book.update(o.unit, "anomaly", "", o.decision, o.ts, severity)
            if event is not None:
                self._emit(event, o, None)
        for limit in self._limits.get(o.unit, ()):
            value = float(step.row[limit.column])
            if value != value:  # NaN: stale sensor, no decision
                continue
            level = limit.level(value)
            event = book.update(
                o.unit,
                "limit",
                limit.sensor,
                level is not None,
                o.ts,
                LIMIT_SEVERITY[level] if level is not None else "low",
                level,
                LEVEL_RANK[level] if level is not None else 0,
            )
            if event is not None and event.level is not None:
                bound = limit.bound(event.level)
                self._emit(event, o, LimitBreach(limit.sensor, event.level, bound, value))  # type: ignore[arg-type]
        event = book.update(o.unit, "sensor_stale", "", o.stale, o.ts, "low")
        if event is not None:
            self._emit(event, o, None)
        if o.quality or book.is_active(o.unit, "bad_quality"):
            self._bad_quality_alarms(o)
        active = book.active_kinds(o.unit)
        o.alarms = (
            {kind: active.get(kind, 0) > 0 for kind in STEP_ALARM_KINDS} if active else _ALL_CLEAR
        )
        if o.alerts:
            o.alerts[:] = [self.readable(a) for a in o.alerts]
            alerts.extend(o.alerts)

    def flood_alert(self, s: FloodSummary) -> Alert:
        """The summary alert of a unit's flood window (the suppressed alerts by kind)."""
        self.log.warning(
            "alert_flood",
            unit=s.unit,
            suppressed=s.suppressed,
            by_kind=s.by_kind,
            window_start=s.window_start,
        )
        return Alert(
            alert_id=s.alert_id,
            plant=self._plant,
            unit=s.unit,
            kind="flood",
            state="summary",
            severity=s.severity,
            ts=s.window_end,
            raised_at=s.window_start,
            model_set_version=self._current_version(),
            agent_id=self._agent_id,
            flood=FloodDetail(s.suppressed, s.by_kind, s.window_start, s.window_end),
        )

    def readable(self, alert: Alert) -> Alert:
        """The alert with its plain-text message and engineering units."""
        return with_message(alert, self._engineering_units())

    def _bad_quality_alarms(self, o: StepOutcome) -> None:
        """One alarm per sensor whose readings are impossible, frozen or noisy, fed every
        step while it is or its alarm is active (so it clears after ``off_delay`` good
        steps)."""
        book = self.book
        subjects = dict.fromkeys((*o.quality, *book.active_subjects(o.unit, "bad_quality")))
        for sensor in subjects:
            event = book.update(
                o.unit, "bad_quality", sensor, sensor in o.quality, o.ts, BAD_QUALITY_SEVERITY
            )
            if event is not None:
                self._emit(event, o, None, sensor=sensor, quality=o.quality.get(sensor))

    def _emit(
        self,
        event: AlarmEvent,
        o: StepOutcome,
        breach: LimitBreach | None,
        sensor: str | None = None,
        quality: str | None = None,
    ) -> None:
        log_fields: dict[str, Any] = {
            "unit": event.unit,
            "kind": event.kind,
            "subject": event.subject,
            "alert_id": event.alert_id,
            "ts": o.ts,
        }
        if not event.publish:
            if event.state == "raised" and not event.level_change:
                self.log.info("alert_suppressed", **log_fields)
            return
        if event.level is not None:
            log_fields["level"] = event.level
        name = "alert_level_changed" if event.level_change else f"alert_{event.state}"
        self.log.info(name, severity=event.severity, **log_fields)
        kind: AlertKind = event.kind  # type: ignore[assignment]
        o.alerts.append(
            Alert(
                alert_id=event.alert_id,
                plant=self._plant,
                unit=event.unit,
                kind=kind,
                state=event.state,
                severity=event.severity,
                ts=event.ts,
                raised_at=event.raised_ts,
                model_set_version=o.model_set_version or self._current_version(),
                agent_id=self._agent_id,
                score=o.score,
                models=o.models,
                top_sensors=o.top_sensors,
                limit=breach,
                stale_sensors=o.stale_sensors,
                sensor=breach.sensor if breach is not None else sensor,
                outside_envelope=o.outside_envelope,
                quality=quality,
                arrival=o.last_received,
                alarm=alarm_key(event.kind, event.subject),
            )
        )
