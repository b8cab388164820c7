"""What the console knows right now about every agent and unit, from the MQTT streams.

Pure and synchronous: the subscriber feeds decoded messages in, the pages read views out.
Every change bumps :attr:`LiveState.version` and the changed unit's ``version``, so a page
refresh re-renders only what changed since it last looked.

A unit's state colour comes from the agent's retained alarm list when it publishes one (the
alarm-lifecycle contract); an agent without it is followed through its raised/cleared alerts.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from edge_agent.pipeline.manifest import warning_list

UnitState = Literal["alarm", "unacknowledged", "shelved", "out_of_service", "stale", "normal"]

#: Display order (worst first) and colours the pages use.
STATE_COLOURS: dict[str, str] = {
    "alarm": "#d32f2f",
    "unacknowledged": "#f57c00",
    "shelved": "#7b1fa2",
    "out_of_service": "#616161",
    "stale": "#fbc02d",
    "normal": "#388e3c",
    "unknown": "#9e9e9e",
}

_ALERT_STATES_RAISING = {"raised"}
_ALERT_STATES_CLEARING = {"cleared"}


def parse_ts(value: Any) -> float | None:
    """RFC 3339 (or Unix seconds) to Unix seconds; None for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return dt.timestamp() if dt.tzinfo is not None else None
    return None


@dataclass
class AgentView:
    plant: str
    agent_id: str
    state: str = "unknown"
    ts: float | None = None
    model_set: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    seen_at: float = 0.0

    @property
    def training_warnings(self) -> list[str]:
        """What training warned about the model set this agent runs (its status carries
        them; an agent older than that field, or a malformed entry, gives none)."""
        trace = self.raw.get("model_set")
        return warning_list(trace.get("training_warnings") if isinstance(trace, dict) else None)


@dataclass
class UnitView:
    plant: str
    unit: str
    agent_id: str | None = None
    score: float | None = None
    decision: bool | None = None
    stale: bool = False
    score_ts: float | None = None
    top_sensors: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)
    model_set_version: str | None = None
    #: (step ts, ensemble score) of the last ``window`` seconds, oldest first.
    history: deque[tuple[float, float | None]] = field(default_factory=lambda: deque(maxlen=2000))
    #: The agent's retained alarm list document, when it publishes one.
    alarm_list: dict[str, Any] | None = None
    #: Raised-but-not-cleared episodes seen on the alerts topic (alert_id -> alert).
    open_episodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_alert: dict[str, Any] | None = None
    version: int = 0
    #: Sensor readings of the last ``window`` seconds, at most one point per second.
    trends: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    #: Bumped by new readings only (cheaper than a redraw of the whole card).
    trend_version: int = 0

    @property
    def alarms(self) -> list[dict[str, Any]]:
        """Current alarms: the agent's list, else the open episodes of its alerts."""
        if self.alarm_list is not None:
            return list(self.alarm_list.get("alarms") or [])
        out = []
        for a in self.open_episodes.values():
            subject = (a.get("limit") or {}).get("sensor")
            out.append(
                {
                    "alarm": a["kind"] if subject is None else f"{a['kind']}/{subject}",
                    "kind": a["kind"],
                    "subject": subject,
                    "state": "unack_active",
                    "active": True,
                    "acknowledged": False,
                    "alert_id": a.get("alert_id"),
                    "severity": a.get("severity"),
                    "raised_at": a.get("raised_at"),
                    "message": "",
                    "shelved": None,
                    "suppressed": False,
                    "out_of_service": False,
                }
            )
        return out

    @property
    def state(self) -> UnitState | Literal["unknown"]:
        oos = (self.alarm_list or {}).get("out_of_service") or {}
        if oos.get("unit"):
            return "out_of_service"
        alarms = self.alarms
        live = [a for a in alarms if not a.get("shelved") and not a.get("out_of_service")]
        if any(a.get("active") and not a.get("suppressed") for a in live):
            return "alarm"
        if any(not a.get("acknowledged") for a in live):
            return "unacknowledged"
        if alarms:
            return "shelved"
        if self.stale:
            return "stale"
        if self.score_ts is None and self.alarm_list is None and self.last_alert is None:
            return "unknown"
        return "normal"


class LiveState:
    """Agents and units of every configured plant; fed by the subscriber."""

    def __init__(self, window_seconds: float = 300.0, clock: Callable[[], float] = time.time):
        self.window_seconds = window_seconds
        self.clock = clock
        self.units: dict[tuple[str, str], UnitView] = {}
        self.agents: dict[tuple[str, str], AgentView] = {}
        self.replies: deque[dict[str, Any]] = deque(maxlen=200)
        self.version = 0
        self.last_message_at: float | None = None

    def unit(self, plant: str, unit: str) -> UnitView:
        key = (plant, unit)
        view = self.units.get(key)
        if view is None:
            view = self.units[key] = UnitView(plant, unit)
        return view

    def _touch(self, view: UnitView | None = None) -> None:
        self.version += 1
        self.last_message_at = self.clock()
        if view is not None:
            view.version = self.version

    # -- feeding --------------------------------------------------------------------------

    def on_scores(self, plant: str, unit: str, doc: dict[str, Any]) -> None:
        view = self.unit(plant, unit)
        ts = parse_ts(doc.get("ts"))
        if ts is None:
            return
        score = doc.get("score")
        view.score = float(score) if isinstance(score, int | float) else None
        view.decision = doc.get("decision")
        view.stale = bool(doc.get("stale"))
        view.score_ts = ts
        view.top_sensors = list(doc.get("top_sensors") or [])
        view.models = dict(doc.get("models") or {})
        view.model_set_version = doc.get("model_set_version") or view.model_set_version
        view.agent_id = doc.get("agent_id") or view.agent_id
        view.history.append((ts, view.score))
        horizon = ts - self.window_seconds
        while view.history and view.history[0][0] < horizon:
            view.history.popleft()
        self._touch(view)

    def on_readings(self, plant: str, unit: str, ts: float, values: dict[str, float]) -> None:
        """Readings of one step (telemetry) or one sensor, for the trends."""
        view = self.unit(plant, unit)
        horizon = ts - self.window_seconds
        for sensor, value in values.items():
            points = view.trends.get(sensor)
            if points is None:
                points = view.trends[sensor] = deque(maxlen=4000)
            if points and ts - points[-1][0] < 1.0:
                continue  # at most one point per second per sensor
            points.append((ts, value))
            while points and points[0][0] < horizon:
                points.popleft()
        view.trend_version += 1
        self.last_message_at = self.clock()

    def on_alert(self, plant: str, unit: str, doc: dict[str, Any]) -> None:
        view = self.unit(plant, unit)
        alert_id = doc.get("alert_id")
        state = doc.get("state")
        if isinstance(alert_id, str):
            if state in _ALERT_STATES_RAISING and doc.get("kind") != "flood":
                view.open_episodes[alert_id] = doc
            elif state in _ALERT_STATES_CLEARING:
                view.open_episodes.pop(alert_id, None)
        view.last_alert = doc
        view.agent_id = doc.get("agent_id") or view.agent_id
        self._touch(view)

    def on_alarm_list(self, plant: str, unit: str, doc: dict[str, Any] | None) -> None:
        """The retained list; None when it was cleared (an empty retained message)."""
        view = self.unit(plant, unit)
        view.alarm_list = doc
        if doc is not None:
            view.agent_id = doc.get("agent_id") or view.agent_id
        self._touch(view)

    def on_status(self, plant: str, agent_id: str, doc: dict[str, Any]) -> None:
        key = (plant, agent_id)
        view = self.agents.get(key) or AgentView(plant, agent_id)
        view.state = str(doc.get("state", "unknown"))
        view.ts = parse_ts(doc.get("ts"))
        versions = doc.get("versions")
        view.versions = dict(versions) if isinstance(versions, dict) else {}
        view.model_set = view.versions.get("model_set")
        view.raw = doc
        view.seen_at = self.clock()
        self.agents[key] = view
        self._touch()

    def on_reply(self, plant: str, unit: str, doc: dict[str, Any]) -> None:
        self.replies.append({"plant": plant, "unit": unit, **doc})
        self._touch()

    # -- reading --------------------------------------------------------------------------

    def agent_of(self, view: UnitView) -> AgentView | None:
        if view.agent_id is None:
            return None
        return self.agents.get((view.plant, view.agent_id))

    def sorted_units(self) -> list[UnitView]:
        return [self.units[k] for k in sorted(self.units)]

    def reply_for(self, request_id: str) -> dict[str, Any] | None:
        for reply in reversed(self.replies):
            if reply.get("request_id") == request_id:
                found: dict[str, Any] = reply
                return found
        return None
