"""Operating limits per sensor, ISA-18.2 style: one alarm per sensor at its highest level.

A control system shows one alarm point per measurement whose priority follows the value:
crossing HI raises it, crossing HIHI as well escalates *the same alarm*, and falling back
below HIHI steps it down to HI again. Three separate alarms (HI, HIHI and the anomaly) for
one temperature excursion would be a small flood of their own. So a sensor's configured
levels are compiled into one :class:`SensorLimits` and :meth:`SensorLimits.level` returns
the single most severe level the value breaches (or None); the alarm book debounces level
changes (see :meth:`edge_agent.pipeline.alarm.AlarmBook.update`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from edge_agent.config import AgentSettings, ConfigError

LimitLevel = Literal["HIHI", "HI", "LO", "LOLO"]

#: Rank of a level: a change to a higher rank is an escalation.
LEVEL_RANK: dict[str, int] = {"HI": 1, "LO": 1, "HIHI": 2, "LOLO": 2}


@dataclass(frozen=True, slots=True)
class SensorLimits:
    """The configured levels of one sensor of one unit (absent levels are None)."""

    column: int
    sensor: str
    hihi: float | None = None
    hi: float | None = None
    lo: float | None = None
    lolo: float | None = None

    def level(self, value: float) -> LimitLevel | None:
        """The most severe level ``value`` breaches; None inside all limits (or NaN)."""
        if self.hihi is not None and value > self.hihi:
            return "HIHI"
        if self.hi is not None and value > self.hi:
            return "HI"
        if self.lolo is not None and value < self.lolo:
            return "LOLO"
        if self.lo is not None and value < self.lo:
            return "LO"
        return None

    def bound(self, level: str) -> float:
        """The configured value of ``level`` (which must be configured)."""
        value = {"HIHI": self.hihi, "HI": self.hi, "LO": self.lo, "LOLO": self.lolo}[level]
        assert value is not None, f"{self.sensor}: no {level} limit configured"
        return value


def compile_limits(
    settings: AgentSettings, sensors: Sequence[str]
) -> dict[str, list[SensorLimits]]:
    """Configured limits per unit; a limit on a sensor the models do not know is an error
    (a typo there would silently disable a safety alarm)."""
    column = {name: i for i, name in enumerate(sensors)}
    limits: dict[str, list[SensorLimits]] = {}
    problems: list[str] = []
    for unit in settings.units:
        compiled: list[SensorLimits] = []
        for sensor, lim in unit.limits.items():
            if sensor not in column:
                problems.append(
                    f"config key units.{unit.name}.limits.{sensor}: no such sensor in the "
                    f"model set (has {', '.join(sensors)})"
                )
                continue
            if any(v is not None for v in (lim.hihi, lim.hi, lim.lo, lim.lolo)):
                compiled.append(
                    SensorLimits(column[sensor], sensor, lim.hihi, lim.hi, lim.lo, lim.lolo)
                )
        if compiled:
            limits[unit.name] = compiled
    if problems:
        raise ConfigError(problems)
    return limits
