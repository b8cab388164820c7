"""Sensor descriptions shared by the simulator, training and the agent.

A sensor's valid range is physical: a reading outside it cannot be real and is
rejected at ingest rather than scored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SensorSpec:
    """One sensor: name as used in topics and CSV columns, engineering unit, valid range."""

    name: str
    unit: str
    lo: float
    hi: float
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensorSpec:
        return cls(
            name=str(data["name"]),
            unit=str(data.get("unit", "")),
            lo=float(data["lo"]),
            hi=float(data["hi"]),
            description=str(data.get("description", "")),
        )

    def in_range(self, value: float) -> bool:
        return self.lo <= value <= self.hi


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
