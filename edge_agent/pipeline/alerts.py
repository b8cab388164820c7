"""What the agent publishes: alerts and per-step scores, as dataclasses, JSON and JSON Schema.

Alerts carry everything an operator or a downstream system needs without asking the agent
again: which models said what, which sensors contributed most, the limit that was crossed.
``alert_id`` is the same for the ``raised`` and the ``cleared`` message of one alarm
episode and deterministic (see :func:`edge_agent.pipeline.alarm.alert_id`), so subscribers can
de-duplicate redeliveries and resends (``resent`` is set by the outbox, see
:func:`edge_agent.daemon.outbox.mark_resent`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, get_args

import orjson

AlertKind = Literal["anomaly", "limit", "sensor_stale", "bad_quality", "flood", "maintenance"]
#: ``summary`` only for ``flood``: the flood guard's count of alerts it held back.
#: The audit states record operator commands and shelve expiries (edge_agent.pipeline.lifecycle).
AlertState = Literal[
    "raised",
    "cleared",
    "summary",
    "acknowledged",
    "shelved",
    "unshelved",
    "shelve_expired",
    "out_of_service",
    "in_service",
]
#: Everything after raised, cleared and summary.
AUDIT_STATES: tuple[AlertState, ...] = get_args(AlertState)[3:]
Severity = Literal["low", "medium", "high"]

SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high")
ALERT_KINDS: tuple[AlertKind, ...] = (
    "anomaly",
    "limit",
    "sensor_stale",
    "bad_quality",
    "flood",
    "maintenance",
)


def rfc3339(ts: float, timespec: str = "milliseconds") -> str:
    """Unix seconds as RFC 3339 UTC, e.g. ``2024-05-01T12:00:00.000Z``."""
    text = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec=timespec)
    return text.replace("+00:00", "Z")


def _parse_rfc3339(text: str) -> float:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without offset: {text!r}")
    return dt.timestamp()


class ModelVerdict(NamedTuple):
    """One model's view of a step: sign-corrected score, its threshold, score > threshold.

    (Tuples: one is made per model per scored step, and they are cheaper than dataclasses.)
    """

    score: float
    threshold: float
    decision: bool

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "threshold": self.threshold, "decision": self.decision}


class SensorError(NamedTuple):
    """A sensor's share of the autoencoder's reconstruction error."""

    sensor: str
    error: float


@dataclass(frozen=True, slots=True)
class LimitBreach:
    """A configured operating limit crossed by a step's value."""

    sensor: str
    level: Literal["HIHI", "HI", "LO", "LOLO"]
    limit: float
    value: float
    #: The sensor's engineering unit from the model manifest (e.g. ``degC``), "" if unknown.
    engineering_unit: str = ""


class EnvelopeExcursion(NamedTuple):
    """A sensor value outside what the models saw in training (unusual, and scored)."""

    sensor: str
    value: float
    lo: float | None
    hi: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"sensor": self.sensor, "value": self.value, "lo": self.lo, "hi": self.hi}


@dataclass(frozen=True, slots=True)
class FloodDetail:
    """What the flood guard held back for one unit in one window."""

    suppressed: int
    by_kind: dict[str, int]
    window_start: float
    window_end: float


@dataclass(frozen=True, slots=True)
class AuditDetail:
    """Who did what to an alarm (an operator command, or a shelve that ran out)."""

    operator: str
    comment: str | None = None
    #: The sensor of an out_of_service / in_service command; None for the whole unit.
    sensor: str | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    plant: str
    unit: str
    kind: AlertKind
    state: AlertState
    severity: Severity
    #: Start of the step this message is about (Unix seconds; RFC 3339 in JSON).
    ts: float
    #: Start of the step at which the episode was raised.
    raised_at: float
    model_set_version: str
    agent_id: str
    #: Ensemble score of the step (None when the step was not scored).
    score: float | None = None
    models: Mapping[str, ModelVerdict] = field(default_factory=dict)
    top_sensors: Sequence[SensorError] = ()
    limit: LimitBreach | None = None
    stale_sensors: Sequence[str] = ()
    flood: FloodDetail | None = None
    #: The sensor a per-sensor alarm (``limit``, ``bad_quality``) is about.
    sensor: str | None = None
    #: Sensors outside their training envelope at this step (any kind of alert).
    outside_envelope: Sequence[EnvelopeExcursion] = ()
    #: ``bad_quality`` only: why the readings are not trusted (impossible, frozen, noisy).
    quality: str | None = None
    resent: bool = False
    #: Arrival (agent clock) of the step's last reading: for ``reading_to_alert_seconds``
    #: after the outbox, and for subscribers' own latency figures (``received_at``).
    arrival: float | None = None
    #: One line of plain text for people (see :mod:`edge_agent.pipeline.messages`).
    message: str = ""
    #: The alarm's name (edge_agent.pipeline.alarm.alarm_key); None for flood summaries and
    #: unit-wide maintenance events.
    alarm: str | None = None
    #: Set on audit events (the AUDIT_STATES) only.
    audit: AuditDetail | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "alert_id": self.alert_id,
            "plant": self.plant,
            "unit": self.unit,
            "kind": self.kind,
            "state": self.state,
            "severity": self.severity,
            "message": self.message,
            "ts": rfc3339(self.ts),
            "raised_at": rfc3339(self.raised_at),
            "score": self.score,
            "models": {name: v.to_dict() for name, v in self.models.items()},
            "top_sensors": [{"sensor": s.sensor, "error": s.error} for s in self.top_sensors],
            "limit": (
                None
                if self.limit is None
                else {
                    "sensor": self.limit.sensor,
                    "level": self.limit.level,
                    "limit": self.limit.limit,
                    "value": self.limit.value,
                    "engineering_unit": self.limit.engineering_unit,
                }
            ),
            "stale_sensors": list(self.stale_sensors),
            "flood": (
                None
                if self.flood is None
                else {
                    "suppressed": self.flood.suppressed,
                    "by_kind": dict(self.flood.by_kind),
                    "window_start": rfc3339(self.flood.window_start),
                    "window_end": rfc3339(self.flood.window_end),
                }
            ),
            "sensor": self.sensor,
            "outside_envelope": [e.to_dict() for e in self.outside_envelope],
            "quality": self.quality,
            "model_set_version": self.model_set_version,
            "agent_id": self.agent_id,
            "resent": self.resent,
            "received_at": None if self.arrival is None else rfc3339(self.arrival, "microseconds"),
            "alarm": self.alarm,
        }
        if self.audit is not None:
            doc["operator"] = self.audit.operator
            doc["comment"] = self.audit.comment
            if self.audit.sensor is not None:
                doc["sensor"] = self.audit.sensor
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, payload: bytes) -> Alert | None:
        """The alert back from its JSON (e.g. out of the outbox); None if it is not one."""
        try:
            doc = orjson.loads(payload)
            limit = doc["limit"]
            flood = doc["flood"]
            return cls(
                alert_id=str(doc["alert_id"]),
                plant=str(doc["plant"]),
                unit=str(doc["unit"]),
                kind=doc["kind"],
                state=doc["state"],
                severity=doc["severity"],
                ts=_parse_rfc3339(doc["ts"]),
                raised_at=_parse_rfc3339(doc["raised_at"]),
                model_set_version=str(doc["model_set_version"]),
                agent_id=str(doc["agent_id"]),
                score=None if doc["score"] is None else float(doc["score"]),
                models={
                    name: ModelVerdict(float(v["score"]), float(v["threshold"]), v["decision"])
                    for name, v in doc["models"].items()
                },
                top_sensors=tuple(
                    SensorError(str(e["sensor"]), float(e["error"])) for e in doc["top_sensors"]
                ),
                limit=None
                if limit is None
                else LimitBreach(
                    str(limit["sensor"]),
                    limit["level"],
                    float(limit["limit"]),
                    float(limit["value"]),
                    str(limit.get("engineering_unit", "")),
                ),
                stale_sensors=tuple(str(x) for x in doc["stale_sensors"]),
                flood=None
                if flood is None
                else FloodDetail(
                    int(flood["suppressed"]),
                    {str(k): int(v) for k, v in flood["by_kind"].items()},
                    _parse_rfc3339(flood["window_start"]),
                    _parse_rfc3339(flood["window_end"]),
                ),
                sensor=None if doc.get("sensor") is None else str(doc["sensor"]),
                outside_envelope=tuple(
                    EnvelopeExcursion(str(e["sensor"]), float(e["value"]), e["lo"], e["hi"])
                    for e in doc.get("outside_envelope", ())
                ),
                quality=None if doc.get("quality") is None else str(doc["quality"]),
                resent=bool(doc["resent"]),
                arrival=None
                if doc.get("received_at") is None
                else _parse_rfc3339(doc["received_at"]),
                message=str(doc.get("message", "")),
                alarm=None if doc.get("alarm") is None else str(doc["alarm"]),
                audit=None
                if doc.get("operator") is None
                else AuditDetail(
                    str(doc["operator"]),
                    None if doc.get("comment") is None else str(doc["comment"]),
                    None if doc.get("sensor") is None else str(doc["sensor"]),
                ),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None


def scores_document(
    *,
    plant: str,
    unit: str,
    ts: float,
    score: float | None,
    decision: bool | None,
    models: Mapping[str, ModelVerdict],
    top_sensors: Sequence[SensorError],
    stale: bool,
    alarms: Mapping[str, bool],
    model_set_version: str,
    agent_id: str,
) -> dict[str, Any]:
    """The scores message of one step (one per scored step on the scores topic)."""
    return {
        "plant": plant,
        "unit": unit,
        "ts": rfc3339(ts),
        "score": score,
        "decision": decision,
        "models": {name: v.to_dict() for name, v in models.items()},
        "top_sensors": [{"sensor": s.sensor, "error": s.error} for s in top_sensors],
        "stale": stale,
        "alarms": dict(alarms),
        "model_set_version": model_set_version,
        "agent_id": agent_id,
    }


# -- JSON Schemas (draft 2020-12) ---------------------------------------------------------

_TS = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
_MODELS = {
    "type": "object",
    "description": "Per model: sign-corrected score (higher = more anomalous), threshold, "
    "decision = score > threshold. Empty when the step was not scored.",
    "additionalProperties": {
        "type": "object",
        "required": ["score", "threshold", "decision"],
        "additionalProperties": False,
        "properties": {
            "score": {"type": "number"},
            "threshold": {"type": "number"},
            "decision": {"type": "boolean"},
        },
    },
}
_TOP_SENSORS = {
    "type": "array",
    "description": "Sensors with the largest reconstruction error, largest first.",
    "items": {
        "type": "object",
        "required": ["sensor", "error"],
        "additionalProperties": False,
        "properties": {"sensor": {"type": "string"}, "error": {"type": "number"}},
    },
}


_ENVELOPE = {
    "type": "array",
    "description": "Sensors outside the range the models saw in training at this step: "
    "unusual readings are scored, never dropped; lo/hi is the training envelope.",
    "items": {
        "type": "object",
        "required": ["sensor", "value", "lo", "hi"],
        "additionalProperties": False,
        "properties": {
            "sensor": {"type": "string"},
            "value": {"type": "number"},
            "lo": {"type": ["number", "null"]},
            "hi": {"type": ["number", "null"]},
        },
    },
}


def alert_json_schema() -> dict[str, Any]:
    """JSON Schema of the messages on the alerts topic."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edge-agent alert",
        "type": "object",
        "additionalProperties": False,
        "required": [
            "alert_id",
            "plant",
            "unit",
            "kind",
            "state",
            "severity",
            "message",
            "ts",
            "raised_at",
            "score",
            "models",
            "top_sensors",
            "limit",
            "stale_sensors",
            "flood",
            "sensor",
            "outside_envelope",
            "quality",
            "model_set_version",
            "agent_id",
            "resent",
            "received_at",
            "alarm",
        ],
        "properties": {
            "alert_id": {
                "type": "string",
                "pattern": "^[0-9a-f]{32}$",
                "description": "Same for the raised and cleared message of one episode.",
            },
            "plant": {"type": "string"},
            "unit": {"type": "string"},
            "kind": {"enum": list(ALERT_KINDS)},
            "state": {
                "enum": ["raised", "cleared", "summary", *AUDIT_STATES],
                "description": "summary: only for kind flood, once per flood window. A limit "
                "alarm that moves to another level (HI -> HIHI -> HI) is raised again with the "
                "same alert_id and raised_at, a later ts, the new level and severity. "
                "acknowledged ... in_service: audit events of the alarm lifecycle (operator "
                "commands, shelve expiry), with operator and comment.",
            },
            "severity": {"enum": list(SEVERITIES)},
            "message": {
                "type": "string",
                "description": "one line of plain text for people, e.g. "
                "'Steam temperature 590.0 °C above HIHI 580 °C'",
            },
            "ts": {**_TS, "description": "start of the step this message is about (UTC)"},
            "raised_at": {**_TS, "description": "start of the step that raised the episode"},
            "score": {
                "type": ["number", "null"],
                "description": "calibrated ensemble score of the step: >= 0 exactly when the "
                "ensemble decision is anomalous; null if the step was not scored",
            },
            "models": _MODELS,
            "top_sensors": _TOP_SENSORS,
            "limit": {
                "type": ["object", "null"],
                "required": ["sensor", "level", "limit", "value", "engineering_unit"],
                "additionalProperties": False,
                "description": "the sensor's most severe breached level (one limit alarm per "
                "sensor); value: the step's value (on clear: the value that cleared it)",
                "properties": {
                    "sensor": {"type": "string"},
                    "level": {"enum": ["HIHI", "HI", "LO", "LOLO"]},
                    "limit": {"type": "number"},
                    "value": {"type": "number"},
                    "engineering_unit": {
                        "type": "string",
                        "description": "from the model manifest, e.g. degC; empty if unknown",
                    },
                },
            },
            "stale_sensors": {"type": "array", "items": {"type": "string"}},
            "flood": {
                "type": ["object", "null"],
                "required": ["suppressed", "by_kind", "window_start", "window_end"],
                "additionalProperties": False,
                "properties": {
                    "suppressed": {"type": "integer", "minimum": 1},
                    "by_kind": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "window_start": _TS,
                    "window_end": _TS,
                },
            },
            "sensor": {
                "type": ["string", "null"],
                "description": "the sensor of a per-sensor alarm (limit, bad_quality); on an "
                "out_of_service / in_service audit event the sensor taken out of / back into "
                "service (null for the whole unit)",
            },
            "outside_envelope": _ENVELOPE,
            "quality": {
                "enum": ["impossible", "frozen", "noisy", None],
                "description": "bad_quality only: impossible (outside the instrument range or "
                "not a number), frozen (one value for longer than training ever held one) or "
                "noisy (step-to-step changes beyond what training saw); else null",
            },
            "model_set_version": {"type": "string"},
            "agent_id": {"type": "string"},
            "resent": {"type": "boolean", "description": "true when sent again by the outbox"},
            "received_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "when the agent received the step's last reading (agent clock, "
                "UTC, microseconds); null for flood summaries",
            },
            "alarm": {
                "type": ["string", "null"],
                "description": "the alarm: kind, or kind/sensor (limit/steam_pressure), as in "
                "the retained alarm list and the alarm commands; null for flood summaries and "
                "unit-wide maintenance events",
            },
            "operator": {"type": "string", "description": "audit events only: who"},
            "comment": {"type": ["string", "null"], "description": "audit events only"},
        },
    }


def scores_json_schema() -> dict[str, Any]:
    """JSON Schema of the messages on the scores topic."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edge-agent step scores",
        "type": "object",
        "additionalProperties": False,
        "required": [
            "plant",
            "unit",
            "ts",
            "score",
            "decision",
            "models",
            "top_sensors",
            "stale",
            "alarms",
            "model_set_version",
            "agent_id",
        ],
        "properties": {
            "plant": {"type": "string"},
            "unit": {"type": "string"},
            "ts": {**_TS, "description": "start of the step (UTC)"},
            "score": {"type": ["number", "null"]},
            "decision": {"type": ["boolean", "null"], "description": "ensemble decision"},
            "models": _MODELS,
            "top_sensors": _TOP_SENSORS,
            "stale": {"type": "boolean"},
            "alarms": {
                "type": "object",
                "description": "alarm kind -> active after this step",
                "additionalProperties": {"type": "boolean"},
            },
            "model_set_version": {"type": "string"},
            "agent_id": {"type": "string"},
        },
    }
