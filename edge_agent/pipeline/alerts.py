"""What the agent publishes: alerts and per-step scores, defined once.

The dataclasses below *are* the contract: their field names, order and pydantic annotations
give the JSON on the wire, the parsing of it (:meth:`Alert.from_json`) and the JSON Schemas
committed as ``edge_agent/schemas/alert.schema.json`` and ``scores.schema.json`` (written by
``edge-agent schema``; ``tests/test_schemas.py`` keeps them current). They are plain
dataclasses read by pydantic ``TypeAdapter``s rather than ``BaseModel``s so that building one
costs what it did before (scores are built per step per unit) and so that orjson serialises
:class:`Scores` natively; an :class:`Alert` goes through pydantic's serialiser (timestamps as
RFC 3339), then orjson, so the bytes are what they always were.

Alerts carry everything an operator or a downstream system needs without asking the agent
again: which models said what, which sensors contributed most, the limit that was crossed.
``alert_id`` is the same for the ``raised`` and the ``cleared`` message of one alarm
episode and deterministic (see :func:`edge_agent.pipeline.alarm.alert_id`), so subscribers can
de-duplicate redeliveries and resends (``resent`` is set by the outbox, see
:func:`edge_agent.daemon.outbox.mark_resent`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, get_args

import orjson
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import GenerateJsonSchema

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

SEVERITIES: tuple[Severity, ...] = get_args(Severity)
ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
QUALITIES = ("impossible", "frozen", "noisy")
#: Wire fields present on audit events only (absent, not null, on every other alert).
AUDIT_ONLY_FIELDS = ("operator", "comment")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def rfc3339(ts: float, timespec: str = "milliseconds") -> str:
    """Unix seconds as RFC 3339 UTC, e.g. ``2024-05-01T12:00:00.000Z``."""
    text = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec=timespec)
    return text.replace("+00:00", "Z")


def _rfc3339_us(ts: float) -> str:
    return rfc3339(ts, "microseconds")


def _parse_rfc3339(text: str) -> float:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without offset: {text!r}")
    return dt.timestamp()


def _seconds(value: object) -> object:
    """RFC 3339 text (from JSON) to Unix seconds; anything else is validated as a float."""
    return _parse_rfc3339(value) if isinstance(value, str) else value


_DATE_TIME = {"type": "string", "format": "date-time"}
#: Unix seconds in Python, RFC 3339 UTC with milliseconds in JSON.
Timestamp = Annotated[
    float, BeforeValidator(_seconds), PlainSerializer(rfc3339, return_type=str),
    WithJsonSchema(_DATE_TIME),
]  # fmt: skip
#: The same with microseconds (``received_at``: latency figures want them).
TimestampUs = Annotated[
    float, BeforeValidator(_seconds), PlainSerializer(_rfc3339_us, return_type=str),
    WithJsonSchema(_DATE_TIME),
]  # fmt: skip
#: A timestamp already formatted (the scores message is built only to be sent).
Rfc3339 = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


def wire_config(title: str | None = None, **extra: Any) -> ConfigDict:
    """Pydantic config of a wire type: no unknown keys; every key is always sent.

    ``extra`` goes into the type's JSON Schema as is (e.g. an ``if``/``then``).
    """
    return ConfigDict(
        extra="forbid",
        json_schema_serialization_defaults_required=True,
        title=title,
        json_schema_extra=extra or None,
    )


@dataclass(frozen=True)
class ModelVerdict:
    """One model's view of a step: sign-corrected score, its threshold, score > threshold."""

    # Not slotted (nor SensorError, EnvelopeExcursion, Scores): one is made per model per
    # scored step, and orjson serialises a plain dataclass from its __dict__, fastest.

    __pydantic_config__: ClassVar[ConfigDict] = wire_config()
    score: float
    threshold: float
    decision: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SensorError:
    """A sensor's share of the autoencoder's reconstruction error."""

    __pydantic_config__: ClassVar[ConfigDict] = wire_config()
    sensor: str
    error: float


@dataclass(frozen=True, slots=True)
class LimitBreach:
    """A configured operating limit crossed by a step's value."""

    __pydantic_config__: ClassVar[ConfigDict] = wire_config()
    sensor: str
    level: Literal["HIHI", "HI", "LO", "LOLO"]
    limit: float
    value: float
    engineering_unit: Annotated[
        str, Field(description="from the model manifest, e.g. degC; empty if unknown")
    ] = ""


@dataclass(frozen=True)
class EnvelopeExcursion:
    """A sensor value outside what the models saw in training (unusual, and scored)."""

    __pydantic_config__: ClassVar[ConfigDict] = wire_config()
    sensor: str
    value: float
    lo: float | None
    hi: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FloodDetail:
    """What the flood guard held back for one unit in one window."""

    __pydantic_config__: ClassVar[ConfigDict] = wire_config()
    suppressed: Annotated[int, Field(ge=1)]
    by_kind: dict[str, int]
    window_start: Timestamp
    window_end: Timestamp


@dataclass(frozen=True, slots=True)
class AuditDetail:
    """Who did what to an alarm (an operator command, or a shelve that ran out)."""

    operator: str
    comment: str | None = None
    #: The sensor of an out_of_service / in_service command; None for the whole unit.
    sensor: str | None = None


_Models = Annotated[
    Mapping[str, ModelVerdict],
    Field(
        description="Per model: sign-corrected score (higher = more anomalous), threshold, "
        "decision = score > threshold. Empty when the step was not scored."
    ),
]
_TopSensors = Annotated[
    tuple[SensorError, ...],
    Field(description="Sensors with the largest reconstruction error, largest first."),
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """A message on the alerts topic (fields in wire order)."""

    __pydantic_config__: ClassVar[ConfigDict] = wire_config("edge-agent alert")
    alert_id: Annotated[
        str,
        Field(
            pattern="^[0-9a-f]{32}$",
            description="Same for the raised and cleared message of one episode.",
        ),
    ]
    plant: str
    unit: str
    kind: AlertKind
    state: Annotated[
        AlertState,
        Field(
            description="summary: only for kind flood, once per flood window. A limit alarm "
            "that moves to another level (HI -> HIHI -> HI) is raised again with the same "
            "alert_id and raised_at, a later ts, the new level and severity. acknowledged ... "
            "in_service: audit events of the alarm lifecycle (operator commands, shelve "
            "expiry), with operator and comment."
        ),
    ]
    severity: Severity
    #: One line of plain text for people (see :mod:`edge_agent.pipeline.messages`).
    message: Annotated[
        str,
        Field(
            description="one line of plain text for people, e.g. "
            "'Steam temperature 590.0 °C above HIHI 580 °C'"
        ),
    ] = ""
    ts: Annotated[Timestamp, Field(description="start of the step this message is about (UTC)")]
    raised_at: Annotated[Timestamp, Field(description="start of the step that raised the episode")]
    score: Annotated[
        float | None,
        Field(
            description="calibrated ensemble score of the step: >= 0 exactly when the ensemble "
            "decision is anomalous; null if the step was not scored"
        ),
    ] = None
    models: _Models = field(default_factory=dict)
    top_sensors: _TopSensors = ()
    limit: Annotated[
        LimitBreach | None,
        Field(
            description="the sensor's most severe breached level (one limit alarm per sensor); "
            "value: the step's value (on clear: the value that cleared it)"
        ),
    ] = None
    stale_sensors: tuple[str, ...] = ()
    flood: FloodDetail | None = None
    sensor: Annotated[
        str | None,
        Field(
            description="the sensor of a per-sensor alarm (limit, bad_quality); on an "
            "out_of_service / in_service audit event the sensor taken out of / back into "
            "service (null for the whole unit)"
        ),
    ] = None
    outside_envelope: Annotated[
        tuple[EnvelopeExcursion, ...],
        Field(
            description="Sensors outside the range the models saw in training at this step: "
            "unusual readings are scored, never dropped; lo/hi is the training envelope."
        ),
    ] = ()
    quality: Annotated[
        str | None,
        WithJsonSchema({"enum": [*QUALITIES, None]}),
        Field(
            description="bad_quality only: impossible (outside the instrument range or not a "
            "number), frozen (one value for longer than training ever held one) or noisy "
            "(step-to-step changes beyond what training saw); else null"
        ),
    ] = None
    model_set_version: str
    agent_id: str
    resent: Annotated[bool, Field(description="true when sent again by the outbox")] = False
    #: Arrival (agent clock) of the step's last reading: for ``reading_to_alert_seconds``
    #: after the outbox, and for subscribers' own latency figures (``received_at``).
    arrival: Annotated[
        TimestampUs | None,
        Field(
            alias="received_at",
            description="when the agent received the step's last reading (agent clock, UTC, "
            "microseconds); null for flood summaries",
        ),
    ] = None
    alarm: Annotated[
        str | None,
        Field(
            description="the alarm: kind, or kind/sensor (limit/steam_pressure), as in the "
            "retained alarm list and the alarm commands; null for flood summaries and "
            "unit-wide maintenance events"
        ),
    ] = None
    #: Audit events (the AUDIT_STATES) only: who, and why (the sensor is in ``sensor``).
    operator: Annotated[
        str | None,
        WithJsonSchema({"type": "string"}),
        Field(description="audit events only: who"),
    ] = None
    comment: Annotated[str | None, Field(description="audit events only")] = None

    @property
    def audit(self) -> AuditDetail | None:
        """Who did what, on an audit event; None on every other alert."""
        if self.operator is None:
            return None
        return AuditDetail(self.operator, self.comment, self.sensor)

    def to_dict(self) -> dict[str, Any]:
        """The alert as JSON-ready types, keyed and ordered as on the wire."""
        exclude = set(AUDIT_ONLY_FIELDS) if self.operator is None else None
        doc: dict[str, Any] = _ALERT.dump_python(self, mode="json", by_alias=True, exclude=exclude)
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, payload: bytes) -> Alert | None:
        """The alert back from its JSON (e.g. out of the outbox); None if it is not one.

        Keys this version does not know are ignored (a payload written by a newer agent).
        """
        try:
            doc = orjson.loads(payload)
            if not isinstance(doc, dict):
                return None
            return _ALERT.validate_python({k: v for k, v in doc.items() if k in _ALERT_KEYS})
        except (orjson.JSONDecodeError, ValidationError):
            return None


@dataclass(kw_only=True)
class Scores:
    """The message on the scores topic, one per scored step and unit.

    Built per step, so: a plain dataclass (no validation, no slots) that orjson serialises
    in one call; ``ts`` arrives formatted.
    """

    __pydantic_config__: ClassVar[ConfigDict] = wire_config("edge-agent step scores")
    plant: str
    unit: str
    ts: Annotated[Rfc3339, Field(description="start of the step (UTC)")]
    score: float | None
    decision: Annotated[bool | None, Field(description="ensemble decision")]
    models: _Models
    top_sensors: _TopSensors
    stale: bool
    alarms: Annotated[Mapping[str, bool], Field(description="alarm kind -> active after this step")]
    model_set_version: str
    agent_id: str

    def to_json(self) -> bytes:
        return orjson.dumps(self)


_ALERT: TypeAdapter[Alert] = TypeAdapter(Alert)
_SCORES: TypeAdapter[Scores] = TypeAdapter(Scores)
#: The wire keys (aliases), for ignoring unknown ones in :meth:`Alert.from_json`.
_ALERT_KEYS = frozenset(_ALERT.json_schema(mode="validation")["properties"])


class _WireSchema(GenerateJsonSchema):
    """Without field titles ("Alert Id" only repeats the key) and Python-side defaults."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: Any) -> Any:
        # Defaults are for building alerts in Python; on the wire every key is sent.
        return self.generate_inner(schema["schema"])


def wire_json_schema(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """The JSON Schema of what ``adapter`` serialises (for the committed schema files)."""
    schema = adapter.json_schema(mode="serialization", schema_generator=_WireSchema)
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def alert_json_schema() -> dict[str, Any]:
    """JSON Schema of the messages on the alerts topic."""
    schema = wire_json_schema(_ALERT)
    schema["required"] = [k for k in schema["required"] if k not in AUDIT_ONLY_FIELDS]
    return schema


def scores_json_schema() -> dict[str, Any]:
    """JSON Schema of the messages on the scores topic."""
    return wire_json_schema(_SCORES)
