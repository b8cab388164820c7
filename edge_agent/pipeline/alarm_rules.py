"""What an operator command may name, why it is refused, and the audit events it leaves.

Split from :mod:`edge_agent.pipeline.lifecycle` (the state machine) to keep each module small.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from edge_agent.config import AgentSettings
from edge_agent.pipeline.alerts import Alert, AlertKind, AlertState, AuditDetail, Severity

#: Kinds with one alarm per unit; any other kind is named ``kind/<sensor>``.
UNIT_KINDS = ("anomaly", "sensor_stale")


class CommandRefused(Exception):
    """A well-formed command that does not apply; ``code`` is the metric's reason label."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class CommandResult:
    alarm: str | None
    #: The audit event first, then any held alerts the command released.
    alerts: list[Alert] = field(default_factory=list)


def suppression_problems(settings: AgentSettings, sensors: Sequence[str]) -> list[str]:
    """Suppression keys that name a sensor the model set does not have (one line each)."""
    sup = settings.suppression
    named = [("sensor", sup.sensor), *(("safety_sensors", s) for s in sup.safety_sensors)]
    return [
        f"config key suppression.{key}: no such sensor in the model set ({name})"
        for key, name in named
        if name is not None and name not in sensors
    ]


def check_alarm_name(
    unit: str,
    alarm: str,
    sensors: Collection[str],
    limit_sensors: Mapping[str, Collection[str]],
    known: Collection[tuple[str, str]],
) -> None:
    """Refuse (``unknown_alarm``) a name that cannot be an alarm of this unit."""
    kind, _, sensor = alarm.partition("/")
    if kind in UNIT_KINDS and not sensor:
        return
    if kind == "limit" and sensor in limit_sensors.get(unit, ()):
        return
    if kind not in UNIT_KINDS and kind != "limit" and sensor in sensors:
        return  # per-sensor kinds (bad_quality/<sensor>, ...)
    if (unit, alarm) in known:
        return
    raise CommandRefused(
        "unknown_alarm",
        f"unknown alarm {alarm!r} for unit {unit}: expected anomaly, sensor_stale, "
        f"limit/<sensor with a configured limit> or <kind>/<sensor>",
    )


class AuditEvents:
    """Builds the audit alerts (operator commands, shelve expiry) of one agent."""

    def __init__(self, plant: str, agent_id: str, model_set_version: Callable[[], str]) -> None:
        self._plant = plant
        self._agent_id = agent_id
        self._model_set_version = model_set_version

    def __call__(
        self,
        unit: str,
        kind: AlertKind,
        state: AlertState,
        event_id: str,
        severity: Severity,
        now: float,
        raised_at: float,
        alarm: str | None,
        detail: AuditDetail,
    ) -> Alert:
        return Alert(
            alert_id=event_id,
            plant=self._plant,
            unit=unit,
            kind=kind,
            state=state,
            severity=severity,
            ts=now,
            raised_at=raised_at,
            model_set_version=self._model_set_version(),
            agent_id=self._agent_id,
            alarm=alarm,
            sensor=detail.sensor,
            operator=detail.operator,
            comment=detail.comment,
        )
