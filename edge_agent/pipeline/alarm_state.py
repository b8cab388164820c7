"""The state of one alarm as the lifecycle keeps it, and where it is stored.

See :mod:`edge_agent.pipeline.lifecycle` for the transitions;
:mod:`edge_agent.daemon.alarm_store` stores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from edge_agent.pipeline.alerts import Alert, Severity, rfc3339

ListedState = Literal["unack_active", "ack_active", "unack_rtn", "normal"]


@dataclass(slots=True)
class Shelve:
    by: str
    #: Unix seconds; None = one-shot without a time limit.
    until: float | None
    one_shot: bool
    comment: str | None
    at: float


@dataclass(slots=True)
class AlarmEntry:
    unit: str
    alarm: str
    kind: str
    active: bool
    acknowledged: bool
    alert_id: str
    severity: Severity
    raised_at: float
    message: str
    #: Sensors the alarm is about (its out-of-service test).
    sensors: tuple[str, ...] = ()
    shelved: Shelve | None = None
    #: Its ``raised`` alert was published.
    annunciated: bool = True
    #: The ``raised`` alert held back while the alarm was hidden.
    held: bytes | None = None
    #: Loaded from storage and not yet confirmed by the engine after a restart.
    restored: bool = False
    #: alert_ids of the engine episodes active under this name (one, or one per limit level).
    episodes: set[str] = field(default_factory=set)

    @property
    def subject(self) -> str | None:
        return self.alarm.split("/", 1)[1] if "/" in self.alarm else None

    @property
    def state(self) -> ListedState:
        if self.active:
            return "ack_active" if self.acknowledged else "unack_active"
        return "normal" if self.acknowledged else "unack_rtn"

    def listed(self, suppressed: bool, out_of_service: bool) -> dict[str, object]:
        """The alarm's entry in the retained alarm list (the contract's document)."""
        s = self.shelved
        return {
            "alarm": self.alarm,
            "kind": self.kind,
            "subject": self.subject,
            "state": self.state,
            "active": self.active,
            "acknowledged": self.acknowledged,
            "alert_id": self.alert_id,
            "severity": self.severity,
            "raised_at": rfc3339(self.raised_at),
            "message": self.message,
            "shelved": None
            if s is None
            else {
                "by": s.by,
                "until": None if s.until is None else rfc3339(s.until),
                "one_shot": s.one_shot,
                "comment": s.comment,
            },
            "suppressed": suppressed,
            "out_of_service": out_of_service,
        }


class StateStore(Protocol):
    """Where alarm states and out-of-service marks survive a restart (see alarm_store)."""

    def save_alarm(self, entry: AlarmEntry) -> None: ...
    def delete_alarm(self, unit: str, alarm: str) -> None: ...
    def save_out_of_service(self, unit: str, sensor: str | None, on: bool) -> None: ...


class MemoryStore:
    """A store that forgets (tests, replay)."""

    def save_alarm(self, entry: AlarmEntry) -> None:
        pass

    def delete_alarm(self, unit: str, alarm: str) -> None:
        pass

    def save_out_of_service(self, unit: str, sensor: str | None, on: bool) -> None:
        pass


def describe(alert: Alert) -> str:
    """One line for an operator (the alert's own ``message`` once alerts carry one)."""
    own = getattr(alert, "message", None)
    if isinstance(own, str) and own:
        return own
    if alert.limit is not None:
        lim = alert.limit
        side = ">" if lim.level in ("HI", "HIHI") else "<"
        return f"{lim.sensor} {lim.value:g} {side} {lim.level} limit {lim.limit:g}"
    if alert.kind == "anomaly":
        top = ", ".join(s.sensor for s in alert.top_sensors) or "no sensor named"
        score = "n/a" if alert.score is None else f"{alert.score:.2f}"
        return f"anomaly (ensemble score {score}); top sensors: {top}"
    if alert.stale_sensors:
        return f"{alert.kind}: {', '.join(alert.stale_sensors)}"
    return str(alert.kind)


_TS = {"type": "string", "format": "date-time"}


def alarm_list_json_schema() -> dict[str, object]:
    """JSON Schema of the retained alarm list (``topics.alarms``)."""
    entry = {
        "type": "object",
        "required": [
            "alarm", "kind", "subject", "state", "active", "acknowledged", "alert_id",
            "severity", "raised_at", "message", "shelved", "suppressed", "out_of_service",
        ],
        "properties": {
            "alarm": {"type": "string", "description": "kind or kind/sensor"},
            "kind": {"type": "string"},
            "subject": {"type": ["string", "null"]},
            "state": {
                "enum": ["unack_active", "ack_active", "unack_rtn", "normal"],
                "description": "normal: listed only because it is shelved",
            },
            "active": {"type": "boolean"},
            "acknowledged": {"type": "boolean"},
            "alert_id": {"type": "string", "description": "the current episode"},
            "severity": {"enum": ["low", "medium", "high"]},
            "raised_at": _TS,
            "message": {"type": "string"},
            "shelved": {
                "type": ["object", "null"],
                "required": ["by", "until", "one_shot", "comment"],
                "properties": {
                    "by": {"type": "string"},
                    "until": {"type": ["string", "null"], "format": "date-time"},
                    "one_shot": {"type": "boolean"},
                    "comment": {"type": ["string", "null"]},
                },
            },
            "suppressed": {"type": "boolean", "description": "suppressed by design"},
            "out_of_service": {"type": "boolean"},
        },
    }  # fmt: skip
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edge-agent retained alarm list",
        "type": "object",
        "required": ["plant", "unit", "agent_id", "ts", "out_of_service", "alarms"],
        "properties": {
            "plant": {"type": "string"},
            "unit": {"type": "string"},
            "agent_id": {"type": "string"},
            "ts": _TS,
            "out_of_service": {
                "type": "object",
                "required": ["unit", "sensors"],
                "properties": {
                    "unit": {"type": "boolean"},
                    "sensors": {"type": "array", "items": {"type": "string"}},
                },
            },
            "suppressed_by_design": {"type": "boolean"},
            "alarms": {"type": "array", "items": entry},
        },
    }
