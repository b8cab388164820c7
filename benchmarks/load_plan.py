"""What the load generator publishes and when: the plan, the timing contract, the values.

Timing contract (the latency measurements rely on it): each unit publishes one step every
``step_seconds``. Step ``k`` of unit ``u`` (of ``U``) is due at the *nominal* time
``k * step + (u + 0.5) / U * step`` — inside step ``k``'s interval, units spread evenly
over it — or, for a *burst* plan (a gateway scanning its tags), every unit at
``k * step + step / 2``. All of that step's messages (one telemetry message, or one per
sensor) carry ``ts`` = that nominal time; a subscriber recovers the nominal publish time of
any step from (unit, step index) with :func:`nominal_time`.

Values: the project's thermal-unit simulator, 8 sensors. A plan ``width`` wider than 8 (the
cost curve's 32 and 128 sensors) repeats the 8 sensor kinds as independent sub-units
(``<sensor>_<n>``, each from its own simulator seed); :func:`wide_series` is also what the
model sets of that width are trained on (model_sets.build_wide_model_set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SENSORS = (
    "steam_temperature", "steam_pressure", "feedwater_flow", "turbine_vibration", "load",
    "flue_gas_temperature", "condenser_vacuum", "bearing_temperature",
)  # fmt: skip


def sensor_names(width: int = len(SENSORS)) -> tuple[str, ...]:
    """The first 8 are the thermal sensors; beyond that ``<sensor>_<n>`` (sub-unit n)."""
    return tuple(
        SENSORS[j] if j < len(SENSORS) else f"{SENSORS[j % len(SENSORS)]}_{j // len(SENSORS)}"
        for j in range(width)
    )


def wide_series(n_steps: int, width: int, seed: int, day_seconds: float = 3600.0) -> np.ndarray:
    """(n_steps, width) healthy readings: ceil(width / 8) simulated sub-units side by side."""
    from edge_agent.tools.simulator import ThermalUnitSimulator

    parts = [
        np.asarray(
            ThermalUnitSimulator(seed=seed + 1000 * r, day_seconds=day_seconds)
            .generate(n_steps)
            .values,
            dtype=np.float64,
        )
        for r in range(math.ceil(width / len(SENSORS)))
    ]
    return np.ascontiguousarray(np.concatenate(parts, axis=1)[:, :width])


@dataclass(frozen=True)
class Plan:
    """What to publish: ``rate`` messages/s spread over ``units`` units."""

    units: int
    rate: float
    mode: str = "telemetry"  # or "sensors"
    plant: str = "plant1"
    unit_prefix: str = "unit"
    #: every unit's step due at the same instant (a gateway scan) instead of spread out
    burst: bool = False
    #: sensors per unit (8: the thermal unit; more: see :func:`sensor_names`)
    width: int = len(SENSORS)

    @property
    def sensors(self) -> tuple[str, ...]:
        return sensor_names(self.width)

    @property
    def messages_per_step(self) -> int:
        return 1 if self.mode == "telemetry" else self.width

    @property
    def step_us(self) -> int:
        """Step period in whole microseconds (so the agent's step grid has no rounding)."""
        return max(2 * self.units, round(1e6 * self.units * self.messages_per_step / self.rate))

    @property
    def step_seconds(self) -> float:
        return self.step_us / 1e6

    @property
    def readings_per_message(self) -> int:
        return self.width if self.mode == "telemetry" else 1

    def unit_name(self, u: int) -> str:
        return f"{self.unit_prefix}{u + 1}"


def offset_us(plan: Plan, u: int) -> int:
    if plan.burst:
        return plan.step_us // 2
    return (2 * u + 1) * plan.step_us // (2 * plan.units)


def nominal_time(plan: Plan, step_index: int, u: int) -> float:
    """When unit ``u``'s messages for step ``step_index`` were due (and their ``ts``)."""
    return (step_index * plan.step_us + offset_us(plan, u)) / 1e6


def step_index_of(plan: Plan, ts: float) -> int:
    """The step a (possibly millisecond-truncated) step-start timestamp belongs to."""
    return (
        math.floor(ts / plan.step_seconds + 0.5)
        if plan.step_us >= 4000
        else math.floor(ts / plan.step_seconds)
    )


def unit_series(
    plan: Plan,
    n_steps: int,
    fault_units: int = 0,
    fault_every: int = 200,
    fault_len: int = 40,
    fault_sensor: str = "bearing_temperature",
    fault_offset: float = 35.0,
) -> list[np.ndarray]:
    """Readings per unit: up to 8 simulated series (healthy), shared round-robin by units.

    Units ``0..fault_units-1`` get a step fault: ``fault_offset`` added to ``fault_sensor``
    for ``fault_len`` steps every ``fault_every`` steps (first at ``fault_every``), clipped
    to the sensor's valid range, so the models and a configured limit both see it.
    """
    from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS

    n = max(n_steps, 256)
    bases = [wide_series(n, plan.width, s) for s in range(min(8, plan.units))]
    col = SENSORS.index(fault_sensor)
    spec = THERMAL_UNIT_SENSORS[col]
    out = []
    for u in range(plan.units):
        values = bases[u % len(bases)]
        if u < fault_units:
            values = values.copy()
            for start in range(fault_every, n, fault_every):
                values[start : start + fault_len, col] += fault_offset
            values[:, col] = np.clip(values[:, col], spec.lo, spec.hi)
        out.append(values)
    return out


def fault_steps(n_steps: int, fault_every: int, fault_len: int) -> int:
    """How many fault episodes a unit with faults goes through in ``n_steps`` steps."""
    return len(range(fault_every, n_steps, fault_every)) if fault_every > 0 else 0
