"""Alarm commands over MQTT: the payloads, their JSON Schema, parsing and replies.

The pydantic models below *are* the schema: ``edge_agent/schemas/alarm_command.schema.json``
is generated from them and ``alarm_reply.schema.json`` from :class:`AlarmReply` (a test keeps
the committed files current), and the agent validates every payload with the same models. A
payload that does not parse gets a reply naming the first problem, e.g. ``alarm: Field
required`` or ``unknown field 'foo'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from edge_agent.pipeline.alerts import Timestamp, wire_config, wire_json_schema

COMMANDS = ("acknowledge", "shelve", "unshelve", "out_of_service", "in_service")

_Name = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^/+#]+(/[^/+#]+)?$")
]
_Operator = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"\S")]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    operator: _Operator = Field(description="who: the operator's name, required")
    comment: Annotated[str, StringConstraints(max_length=2000)] | None = None
    request_id: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, description="echoed in the reply"
    )
    unit: _Name | None = Field(
        default=None, description="optional; if given it must be the unit of the topic"
    )


class AlarmCommand(_Base):
    """acknowledge or unshelve one alarm."""

    command: Literal["acknowledge", "unshelve"]
    alarm: _Name = Field(description="kind, or kind/sensor: anomaly, limit/steam_pressure")


class ShelveCommand(_Base):
    """Shelve one alarm for a time (default and maximum from the agent config) or one-shot."""

    command: Literal["shelve"]
    alarm: _Name
    duration_seconds: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="default alarm.shelve_default_seconds; at most shelve_max"
    )
    one_shot: bool = Field(default=False, description="until the alarm next clears")


class OutOfServiceCommand(_Base):
    """Take the unit, or one sensor of it, out of service (maintenance) or back in."""

    command: Literal["out_of_service", "in_service"]
    sensor: _Name | None = Field(default=None, description="absent: the whole unit")


Command = AlarmCommand | ShelveCommand | OutOfServiceCommand
_ADAPTER: TypeAdapter[Command] = TypeAdapter(Annotated[Command, Field(discriminator="command")])


class CommandError(Exception):
    """A payload that is not a valid command; ``code`` is the metric's reason label."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_command(payload: bytes) -> Command:
    """The command in ``payload``; raises :class:`CommandError` with the first problem."""
    try:
        return _ADAPTER.validate_json(payload)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        kind = err["type"]
        loc = [str(p) for p in err["loc"]]
        if kind == "json_invalid":
            raise CommandError("bad_json", f"not valid JSON: {err['msg']}") from None
        if kind in ("model_type", "dict_type", "model_attributes_type"):
            raise CommandError("schema", "the command must be a JSON object") from None
        if kind == "union_tag_not_found":
            raise CommandError("schema", "command: field required") from None
        if kind == "union_tag_invalid":
            raise CommandError(
                "schema", f"command: unknown command, expected one of {', '.join(COMMANDS)}"
            ) from None
        field = ".".join(loc[1:] if loc and loc[0] in _TAGS else loc)
        if kind == "extra_forbidden":
            raise CommandError("schema", f"unknown field {field!r}") from None
        raise CommandError("schema", f"{field}: {err['msg']}") from None


_TAGS = {
    "AlarmCommand",
    "ShelveCommand",
    "OutOfServiceCommand",
    *COMMANDS,
}


def peek(payload: bytes) -> tuple[str | None, str | None, str | None]:
    """(request_id, command, alarm) from a payload that may be invalid, for the reply."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None

    def text(key: str) -> str | None:
        value = doc.get(key)
        return value[:256] if isinstance(value, str) else None

    return text("request_id"), text("command"), text("alarm")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmReply:
    """The reply to one command on the alarm reply topic (fields in wire order)."""

    __pydantic_config__: ClassVar[ConfigDict] = wire_config(
        "edge-agent alarm command reply",
        **{"if": {"properties": {"ok": {"const": False}}}, "then": {"required": ["reason"]}},
    )
    request_id: str | None
    command: str | None
    alarm: str | None
    ok: bool
    ts: Timestamp
    #: Sent only when ``ok`` is false (absent, not null, on an accepted command).
    reason: Annotated[
        str | None,
        WithJsonSchema({"type": "string"}),
        Field(description="only when ok is false"),
    ] = None

    def to_json(self) -> bytes:
        exclude = {"reason"} if self.ok else None
        return orjson.dumps(_REPLY.dump_python(self, mode="json", exclude=exclude))


_REPLY: TypeAdapter[AlarmReply] = TypeAdapter(AlarmReply)


def command_json_schema() -> dict[str, Any]:
    """JSON Schema of the payloads on the alarm command topic."""
    schema = _ADAPTER.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edge-agent alarm command",
        **schema,
    }


def reply_json_schema() -> dict[str, Any]:
    """JSON Schema of the replies on the alarm reply topic."""
    schema = wire_json_schema(_REPLY)
    schema["required"] = [k for k in schema["required"] if k != "reason"]
    return schema
