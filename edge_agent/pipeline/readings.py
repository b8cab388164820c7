r"""What a message carries: the payload shapes ingest accepts, and the readings it hands on.

The shapes are pydantic-core validated ``TypedDict``\s (faster than models: no instance is
built) in strict mode, so bools and numeric strings stay out; :func:`validation_reason` names
the rejection of a payload that fails them. :class:`Readings` is ingest's output and
alignment's input (:mod:`edge_agent.pipeline.align`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, NamedTuple, NotRequired

from pydantic import AllowInfNan, Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

_FiniteNumber = Annotated[float, Strict(), AllowInfNan(False)]
_Timestamp = Annotated[float, Strict(), AllowInfNan(False)] | Annotated[str, Strict()]


class SensorPayload(TypedDict):
    """``{"ts": …, "value": …}`` on a sensor topic."""

    ts: NotRequired[_Timestamp]
    value: _FiniteNumber


class TelemetryPayload(TypedDict):
    """``{"ts": …, "values": {sensor: value}}`` on a telemetry topic: one snapshot of a unit."""

    ts: NotRequired[_Timestamp]
    values: Annotated[dict[str, _FiniteNumber], Field(min_length=1)]


# TypedDicts validate faster than BaseModels (no instance to build); strict mode keeps
# bools and numeric strings out.
SENSOR_ADAPTER: TypeAdapter[SensorPayload] = TypeAdapter(SensorPayload)
TELEMETRY_ADAPTER: TypeAdapter[TelemetryPayload] = TypeAdapter(TelemetryPayload)
BARE_ADAPTER: TypeAdapter[float] = TypeAdapter(_FiniteNumber)


def validation_reason(exc: ValidationError, payload: bytes) -> str:
    """The rejection reason of a payload that failed validation against its shape."""
    err = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    kind = err["type"]
    if kind == "json_invalid":
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return "bad_encoding"
        return "bad_json"
    if kind == "finite_number":
        return "not_finite"
    return "bad_type"


class Reading(NamedTuple):
    """One sensor value. ``column`` is the sensor's index in the model set's order."""

    unit: str
    sensor: str
    ts: float
    value: float
    received: float
    column: int


class Readings(NamedTuple):
    """The accepted values of one message, which all share a unit and a timestamp.

    Parallel lists rather than one object per value: a telemetry message then costs one
    tuple, and alignment files all its values under their step in one go.
    """

    unit: str
    ts: float
    received: float
    columns: list[int]
    values: list[float]

    def each(self, sensor_names: Sequence[str]) -> list[Reading]:
        """One :class:`Reading` per value (for logs and tests)."""
        return [
            Reading(self.unit, sensor_names[c], self.ts, v, self.received, c)
            for c, v in zip(self.columns, self.values, strict=True)
        ]
