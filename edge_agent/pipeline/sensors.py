"""Sensor descriptions shared by the simulator, training and the agent.

Two ranges per sensor, and they must not be confused:

* the *instrument range* (``lo``/``hi``): what the transmitter can physically report, from
  a known sensor spec or the user's configuration. A reading outside it is impossible:
  ingest rejects it (counted, logged) and the sensor raises a ``bad_quality`` alarm.
  Unknown (``±inf``) when nobody stated it — a range guessed from data never rejects;
* the *training envelope* (``envelope_lo``/``envelope_hi``): what the models saw in
  training. A reading outside it is unusual, not bad: it is scored (it is likely the
  anomaly) and the alert names the sensor, its value and the envelope.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SensorSpec:
    """One sensor: name as used in topics and CSV columns, engineering unit, instrument
    range (``±inf`` when unknown) and, once trained, the training envelope."""

    name: str
    unit: str
    lo: float = -math.inf
    hi: float = math.inf
    description: str = ""
    envelope_lo: float = -math.inf
    envelope_hi: float = math.inf
    #: Sensor health limits learned from the fit data (``edge_agent.pipeline.sensor_health``);
    #: None = not checked.
    frozen_limit_steps: int | None = None
    roughness_hi: float | None = None
    #: How many of a window's largest step changes ``roughness_hi`` leaves out.
    roughness_trim: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: an unknown bound is ``None`` (JSON has no infinity)."""
        d = asdict(self)
        for key in ("lo", "hi", "envelope_lo", "envelope_hi"):
            if not math.isfinite(d[key]):
                d[key] = None
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensorSpec:
        def bound(key: str, default: float) -> float:
            v = data.get(key)
            return default if v is None else float(v)

        return cls(
            name=str(data["name"]),
            unit=str(data.get("unit", "")),
            lo=bound("lo", -math.inf),
            hi=bound("hi", math.inf),
            description=str(data.get("description", "")),
            envelope_lo=bound("envelope_lo", -math.inf),
            envelope_hi=bound("envelope_hi", math.inf),
            frozen_limit_steps=(
                None if data.get("frozen_limit_steps") is None else int(data["frozen_limit_steps"])
            ),
            roughness_hi=None if data.get("roughness_hi") is None else float(data["roughness_hi"]),
            roughness_trim=int(data.get("roughness_trim") or 0),
        )

    def in_range(self, value: float) -> bool:
        """Within the instrument range (possible at all)."""
        return self.lo <= value <= self.hi

    def in_envelope(self, value: float) -> bool:
        """Within what training saw."""
        return self.envelope_lo <= value <= self.envelope_hi


#: The 8 sensors of one coal/gas-fired thermal unit, in the order models expect them.
THERMAL_UNIT_SENSORS: tuple[SensorSpec, ...] = (
    SensorSpec("steam_temperature", "degC", 0.0, 700.0, "main steam temperature"),
    SensorSpec("steam_pressure", "bar", 0.0, 250.0, "main steam pressure"),
    SensorSpec("feedwater_flow", "kg/s", 0.0, 800.0, "feedwater mass flow"),
    SensorSpec("turbine_vibration", "mm/s", 0.0, 50.0, "turbine bearing vibration velocity RMS"),
    SensorSpec("load", "MW", 0.0, 800.0, "generator active power"),
    SensorSpec("flue_gas_temperature", "degC", 0.0, 500.0, "flue gas temperature after economiser"),
    SensorSpec("condenser_vacuum", "kPa", 0.0, 30.0, "condenser absolute pressure"),
    SensorSpec("bearing_temperature", "degC", 0.0, 150.0, "turbine journal bearing temperature"),
)


def sensor_names(specs: tuple[SensorSpec, ...] | list[SensorSpec]) -> list[str]:
    return [s.name for s in specs]
