"""The simulated thermal unit's process model: per-sensor noise, wander and lags, the daily
load curve and the load-dependent targets (see :mod:`edge_agent.tools.simulator` for the model
in words). Split from the simulator so the run loop, the faults and the physics each have a
module; the names are shared by :mod:`edge_agent.tools.faults`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.tools.plants import REFERENCE_DESIGN, UnitDesign

FloatArray = NDArray[np.float64]

#: The reference unit's rating; other units scale from it (see :mod:`edge_agent.tools.plants`).
RATED_LOAD_MW = REFERENCE_DESIGN.rated_mw
SETPOINT_SD_MW = 35.0
SETPOINT_MAX_OFFSET_MW = 70.0
SETPOINT_CHANGES_PER_DAY = 16.0
LOAD_LAG_SECONDS = 60.0
BLOCK = 1024

# Independent random streams per seed: the process noise never depends on the faults, so a
# run with faults equals the same run without them everywhere outside the fault windows.
PROCESS_STREAM = 0
FAULT_STREAM = 1
SCHEDULE_STREAM = 2


@dataclass(frozen=True)
class SensorModel:
    """How one sensor behaves: noise, slow wander, lag, and default sensor-fault sizes."""

    noise_sd: float  # white measurement noise
    wander_sd: float  # stationary sd of the slow process disturbance
    wander_tau: float  # seconds
    lag_tau: float  # seconds: first-order response to the load-dependent target
    spike: float  # default spike amplitude
    drift: float  # default drift reached at the end of a drift event


# Internal model order (the output order follows the simulator's ``sensors``).
MODEL: dict[str, SensorModel] = {
    "steam_temperature": SensorModel(0.8, 1.5, 300.0, 180.0, spike=25.0, drift=15.0),
    "steam_pressure": SensorModel(0.5, 0.8, 200.0, 90.0, spike=12.0, drift=8.0),
    "feedwater_flow": SensorModel(2.5, 2.0, 60.0, 15.0, spike=60.0, drift=30.0),
    "turbine_vibration": SensorModel(0.06, 0.1, 120.0, 30.0, spike=2.5, drift=1.2),
    "load": SensorModel(1.2, 2.5, 30.0, LOAD_LAG_SECONDS, spike=60.0, drift=30.0),
    "flue_gas_temperature": SensorModel(0.5, 1.0, 600.0, 400.0, spike=20.0, drift=12.0),
    "condenser_vacuum": SensorModel(0.04, 0.08, 300.0, 300.0, spike=1.5, drift=0.8),
    "bearing_temperature": SensorModel(0.2, 0.3, 600.0, 600.0, spike=8.0, drift=5.0),
}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL)
MODEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(MODEL_NAMES)}
PLANT_NAMES: tuple[str, ...] = tuple(n for n in MODEL_NAMES if n != "load")  # lagged behind load
LOAD_COLUMN = MODEL_INDEX["load"]
PLANT_COLUMNS = np.array([MODEL_INDEX[n] for n in PLANT_NAMES])


def scaled_models(design: UnitDesign) -> dict[str, SensorModel]:
    """Noise, wander and fault sizes of load (MW) and feedwater (kg/s) scale with the unit."""
    out = dict(MODEL)
    for name, k in (("load", design.load_scale), ("feedwater_flow", design.flow_scale)):
        m = MODEL[name]
        out[name] = dataclasses.replace(
            m,
            noise_sd=m.noise_sd * k,
            wander_sd=m.wander_sd * k,
            spike=m.spike * k,
            drift=m.drift * k,
        )
    return out


def targets(load_mw: FloatArray, ambient: FloatArray, d: UnitDesign) -> FloatArray:
    """Steady-state value of every non-load sensor for a load and ambient (-1..1), (n, 7)."""
    pu = load_mw / d.rated_mw
    columns = {
        "steam_temperature": d.steam_temp_base + d.steam_temp_slope * pu,
        "steam_pressure": d.pressure_base + d.pressure_slope * pu,  # sliding pressure
        "feedwater_flow": d.flow_per_mw * load_mw,
        "turbine_vibration": 1.9 + 1.5 * pu,
        "flue_gas_temperature": d.flue_base + d.flue_slope * pu + 3.0 * ambient,
        "condenser_vacuum": 4.4 + 2.6 * pu + 0.5 * ambient,  # absolute pressure, kPa
        "bearing_temperature": 60.0 + 12.0 * pu + 1.5 * ambient,
    }
    return np.stack([columns[n] for n in PLANT_NAMES], axis=1)


def daily_load(phase: FloatArray, scale: float) -> FloatArray:
    """Demand over a day (phase 0 = midnight): night trough, midday and evening peaks."""
    two_pi = 2.0 * np.pi
    return scale * (
        445.0
        - 110.0 * np.cos(two_pi * (phase - 0.16))
        - 25.0 * np.cos(2.0 * two_pi * (phase - 0.45))
    )


class LagBank:
    """First-order lags ``y[i] = a*y[i-1] + (1-a)*u[i]`` for several channels, a block at a time.

    The recursion is run as a parallel prefix scan (log2(block) vectorised passes) instead of
    a Python loop over steps; it only ever multiplies by powers of ``a`` <= 1, so it is as
    stable as the loop. Holds no run state, so one bank serves many runs.
    """

    def __init__(self, taus: Sequence[float], step_seconds: float, block: int) -> None:
        self.a = np.exp(-step_seconds / np.asarray(taus, dtype=np.float64))
        shifts = [1 << k for k in range(max(1, (block - 1).bit_length()))]
        self._passes = [(s, self.a**s) for s in shifts if s < block]

    def run(self, u: FloatArray, state: FloatArray) -> FloatArray:
        """Filter inputs ``u`` (B, C) starting from ``state`` (C,); returns outputs (B, C)."""
        y = (1.0 - self.a) * u
        y[0] += self.a * state
        for shift, decay in self._passes:
            y[shift:] += decay * y[:-shift]
        return y
