"""The state of one alarm as the lifecycle keeps it, where it is stored, and how it is listed.

:class:`AlarmList` is the retained alarm list's contract, defined once like the alerts
(:mod:`edge_agent.pipeline.alerts`): ``edge_agent/schemas/alarm_list.schema.json`` is
generated from it (``edge-agent schema``; ``tests/test_schemas.py`` keeps it current).

See :mod:`edge_agent.pipeline.lifecycle` for the transitions;
:mod:`edge_agent.daemon.alarm_store` stores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Protocol

import orjson
from pydantic import ConfigDict, Field, TypeAdapter

from edge_agent.pipeline.alerts import Alert, Severity, Timestamp, wire_config, wire_json_schema

ListedState = Literal["unack_active", "ack_active", "unack_rtn", "normal"]


@dataclass(slots=True)
class Shelve:
    by: str
    #: Unix seconds; None = one-shot without a time limit.
    until: float | None
    one_shot: bool
    comment: str | None
    at: float


# -- the retained alarm list: the contract (wire order; the committed schema is generated) ----


@dataclass(frozen=True, slots=True)
class ListedShelve:
    """Who shelved a listed alarm, and until when."""

    __pydantic_config__: ClassVar[ConfigDict] = wire_config()
    by: str
    until: Annotated[Timestamp | None, Field(description="null: one-shot without a time limit")]
    one_shot: bool
    comment: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedAlarm:
    """One alarm in the retained list."""

    __pydantic_config__: ClassVar[ConfigDict] = wire_config()
    alarm: Annotated[str, Field(description="kind or kind/sensor")]
    kind: str
    subject: str | None
    state: Annotated[ListedState, Field(description="normal: listed only because it is shelved")]
    active: bool
    acknowledged: bool
    alert_id: Annotated[str, Field(description="the current episode")]
    severity: Severity
    raised_at: Timestamp
    message: str
    shelved: ListedShelve | None
    suppressed: Annotated[bool, Field(description="suppressed by design")]
    out_of_service: bool


@dataclass(frozen=True, slots=True)
class OutOfServiceMarks:
    """What of a unit is out of service: the whole unit, and/or these sensors."""

    __pydantic_config__: ClassVar[ConfigDict] = wire_config()
    unit: bool
    sensors: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmList:
    """The retained message on ``topics.alarms``: one unit's alarms as an operator sees them."""

    __pydantic_config__: ClassVar[ConfigDict] = wire_config("edge-agent retained alarm list")
    plant: str
    unit: str
    agent_id: str
    ts: Timestamp
    out_of_service: OutOfServiceMarks
    suppressed_by_design: bool
    alarms: tuple[ListedAlarm, ...]

    def to_dict(self) -> dict[str, Any]:
        """The list as JSON-ready types, keyed and ordered as on the wire."""
        doc: dict[str, Any] = _ALARM_LIST.dump_python(self, mode="json")
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


_ALARM_LIST: TypeAdapter[AlarmList] = TypeAdapter(AlarmList)


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

    def listed(self, suppressed: bool, out_of_service: bool) -> ListedAlarm:
        """The alarm's entry in the retained alarm list."""
        s = self.shelved
        return ListedAlarm(
            alarm=self.alarm,
            kind=self.kind,
            subject=self.subject,
            state=self.state,
            active=self.active,
            acknowledged=self.acknowledged,
            alert_id=self.alert_id,
            severity=self.severity,
            raised_at=self.raised_at,
            message=self.message,
            shelved=None if s is None else ListedShelve(s.by, s.until, s.one_shot, s.comment),
            suppressed=suppressed,
            out_of_service=out_of_service,
        )


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


def alarm_list_json_schema() -> dict[str, Any]:
    """JSON Schema of the retained alarm list (``topics.alarms``)."""
    return wire_json_schema(_ALARM_LIST)
