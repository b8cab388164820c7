"""Thermal-unit sensor simulator: coupled, seeded readings with labelled faults.

Real plant data with per-sample ground truth is rare, yet training needs labelled faults and
the demo needs a live feed. This module models one thermal unit with simple first-order
process physics, so the eight sensors move together the way a real unit's do: a detector
that only learns per-sensor ranges does worse here than one that learns the couplings.

Process model (all time constants in seconds, independent of how long a "day" is):

* load follows a daily demand curve plus random set-point changes, reached through a lag;
* feedwater flow (0.8 kg/s per MW), sliding steam pressure (160 bar at full load), steam,
  flue-gas, bearing temperatures and condenser pressure each follow their load-dependent
  target through their own lag; flue gas, condenser and bearing also see the ambient
  temperature's daily cycle;
* vibration depends on load (a grid-connected turbine runs at fixed synchronous speed, so
  load, not speed, is what moves it);
* every sensor has a slow disturbance (an Ornstein-Uhlenbeck wander) and white
  measurement noise.

The recursion runs a block of steps at a time as one matrix product, so ``generate`` is fast
and ``stream`` iterates exactly the same blocks; blocks are always full, so a run's first n
rows do not depend on how many rows were asked for.

numpy only: this runs on the edge box (``edge-agent simulate``) as well as in training.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.alerts import rfc3339
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, SensorSpec, sensor_names
from edge_agent.tools.plants import REFERENCE_DESIGN, UnitDesign

FloatArray = NDArray[np.float64]

#: Faults that corrupt one sensor's reading; the process itself is healthy.
SENSOR_FAULT_KINDS: tuple[str, ...] = ("spike", "drift", "stuck", "noise_burst")
#: Faults of the plant itself; they move several sensors together.
PROCESS_FAULT_KINDS: tuple[str, ...] = ("tube_leak", "bearing_degradation", "fouling")
FAULT_KINDS: tuple[str, ...] = SENSOR_FAULT_KINDS + PROCESS_FAULT_KINDS

#: The reference unit's rating; other units scale from it (see :mod:`edge_agent.tools.plants`).
RATED_LOAD_MW = REFERENCE_DESIGN.rated_mw
_SETPOINT_SD_MW = 35.0
_SETPOINT_MAX_OFFSET_MW = 70.0
_SETPOINT_CHANGES_PER_DAY = 16.0
_LOAD_LAG_SECONDS = 60.0
_BLOCK = 1024

# Independent random streams per seed: the process noise never depends on the faults, so a
# run with faults equals the same run without them everywhere outside the fault windows.
_PROCESS_STREAM = 0
_FAULT_STREAM = 1
_SCHEDULE_STREAM = 2


@dataclass(frozen=True)
class _SensorModel:
    """How one sensor behaves: noise, slow wander, lag, and default sensor-fault sizes."""

    noise_sd: float  # white measurement noise
    wander_sd: float  # stationary sd of the slow process disturbance
    wander_tau: float  # seconds
    lag_tau: float  # seconds: first-order response to the load-dependent target
    spike: float  # default spike amplitude
    drift: float  # default drift reached at the end of a drift event


# Internal model order (the output order follows the simulator's ``sensors``).
_MODEL: dict[str, _SensorModel] = {
    "steam_temperature": _SensorModel(0.8, 1.5, 300.0, 180.0, spike=25.0, drift=15.0),
    "steam_pressure": _SensorModel(0.5, 0.8, 200.0, 90.0, spike=12.0, drift=8.0),
    "feedwater_flow": _SensorModel(2.5, 2.0, 60.0, 15.0, spike=60.0, drift=30.0),
    "turbine_vibration": _SensorModel(0.06, 0.1, 120.0, 30.0, spike=2.5, drift=1.2),
    "load": _SensorModel(1.2, 2.5, 30.0, _LOAD_LAG_SECONDS, spike=60.0, drift=30.0),
    "flue_gas_temperature": _SensorModel(0.5, 1.0, 600.0, 400.0, spike=20.0, drift=12.0),
    "condenser_vacuum": _SensorModel(0.04, 0.08, 300.0, 300.0, spike=1.5, drift=0.8),
    "bearing_temperature": _SensorModel(0.2, 0.3, 600.0, 600.0, spike=8.0, drift=5.0),
}
_NAMES: tuple[str, ...] = tuple(_MODEL)
_IDX: dict[str, int] = {name: i for i, name in enumerate(_NAMES)}
_PLANT: tuple[str, ...] = tuple(n for n in _NAMES if n != "load")  # lagged behind load
_LOAD = _IDX["load"]
_PLANT_IDX = np.array([_IDX[n] for n in _PLANT])


def _scaled_models(design: UnitDesign) -> dict[str, _SensorModel]:
    """Noise, wander and fault sizes of load (MW) and feedwater (kg/s) scale with the unit."""
    out = dict(_MODEL)
    for name, k in (("load", design.load_scale), ("feedwater_flow", design.flow_scale)):
        m = _MODEL[name]
        out[name] = dataclasses.replace(
            m,
            noise_sd=m.noise_sd * k,
            wander_sd=m.wander_sd * k,
            spike=m.spike * k,
            drift=m.drift * k,
        )
    return out


def _targets(load_mw: FloatArray, ambient: FloatArray, d: UnitDesign) -> FloatArray:
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
    return np.stack([columns[n] for n in _PLANT], axis=1)


def _daily_load(phase: FloatArray, scale: float) -> FloatArray:
    """Demand over a day (phase 0 = midnight): night trough, midday and evening peaks."""
    two_pi = 2.0 * np.pi
    return scale * (
        445.0
        - 110.0 * np.cos(two_pi * (phase - 0.16))
        - 25.0 * np.cos(2.0 * two_pi * (phase - 0.45))
    )


class _LagBank:
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


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault over steps ``[start, end)``; the ground truth for evaluation."""

    kind: str
    start: int
    end: int  # exclusive
    sensor: str | None = None  # for single-sensor faults; None for process faults
    magnitude: float = 1.0  # relative strength, 1.0 = default severity

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {FAULT_KINDS}")
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"fault needs 0 <= start < end, got [{self.start}, {self.end})")
        if self.kind in SENSOR_FAULT_KINDS and self.sensor is None:
            raise ValueError(f"a {self.kind} fault needs a sensor")
        if self.kind in PROCESS_FAULT_KINDS and self.sensor is not None:
            raise ValueError(f"a {self.kind} fault is a process fault and takes no sensor")
        if not self.magnitude > 0:
            raise ValueError(f"fault magnitude must be positive, got {self.magnitude}")

    @property
    def length(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultEvent:
        sensor = data.get("sensor")
        return cls(
            kind=str(data["kind"]),
            start=int(data["start"]),
            end=int(data["end"]),
            sensor=None if sensor is None else str(sensor),
            magnitude=float(data.get("magnitude", 1.0)),
        )


@dataclass
class SimulationResult:
    """A simulated run: readings, per-step labels and the events that caused them."""

    timestamps: FloatArray  # (n,) Unix seconds
    values: FloatArray  # (n, n_sensors) in sensor order
    labels: NDArray[np.int8]  # (n,) 1 where any fault is active
    events: list[FaultEvent]
    sensors: tuple[SensorSpec, ...]

    @property
    def sensor_names(self) -> list[str]:
        return sensor_names(self.sensors)

    def fault_kind_per_step(self) -> list[str]:
        """Kind of the fault active at each step, "" if none ("a+b" where events overlap)."""
        kinds: list[list[str]] = [[] for _ in range(len(self.timestamps))]
        for event in self.events:
            for i in range(event.start, min(event.end, len(kinds))):
                if event.kind not in kinds[i]:
                    kinds[i].append(event.kind)
        return ["+".join(k) for k in kinds]

    def to_csv(self, path: Path | str) -> None:
        """Columns: timestamp (ISO 8601 UTC, ms), one per sensor, label, fault_kind.

        Floats are written in Python's shortest round-trip form, so reading back is exact.
        """
        with Path(path).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["timestamp", *self.sensor_names, "label", "fault_kind"])
            kinds = self.fault_kind_per_step()
            for ts, row, label, kind in zip(
                self.timestamps.tolist(),
                self.values.tolist(),
                self.labels.tolist(),
                kinds,
                strict=True,
            ):
                writer.writerow([rfc3339(ts), *row, label, kind])


@dataclass
class _PreparedFault:
    """A fault turned into per-step effects, drawn once so any block split gives the same run."""

    event: FaultEvent
    delta: FloatArray | None  # (length, len(model_columns)) additive effect; None for stuck
    model_columns: list[int]  # model columns the delta adds to
    column: int | None  # output column of a stuck sensor


def _fault_rng(seed: int, event: FaultEvent) -> np.random.Generator:
    """Randomness of one event depends only on the seed and the event itself."""
    sensor = len(_NAMES) if event.sensor is None else _IDX[event.sensor]
    key = [seed, _FAULT_STREAM, FAULT_KINDS.index(event.kind), sensor, event.start, event.end]
    return np.random.default_rng(key)


def _sensor_fault_delta(
    event: FaultEvent, rng: np.random.Generator, models: dict[str, _SensorModel]
) -> FloatArray:
    """Additive effect of a spike, drift or noise burst on its sensor, (length,)."""
    assert event.sensor is not None
    model = models[event.sensor]
    n, mag = event.length, event.magnitude
    delta = np.zeros(n)
    if event.kind == "spike":
        count = max(1, round(0.15 * n))
        for pos in rng.choice(n, size=count, replace=False):
            width = int(rng.integers(1, 3))
            sign = rng.choice([-1.0, 1.0])
            delta[pos : pos + width] = sign * model.spike * mag * rng.uniform(0.7, 1.3)
    elif event.kind == "drift":
        sign = rng.choice([-1.0, 1.0])
        delta = sign * model.drift * mag * np.arange(1, n + 1) / n
    elif event.kind == "noise_burst":
        # noise variance multiplied by 1 + 24*magnitude (sd x5 at default severity)
        delta = rng.normal(0.0, model.noise_sd * np.sqrt(24.0 * mag), n)
    return delta


def _process_fault_delta(
    event: FaultEvent, rng: np.random.Generator, flow_scale: float = 1.0
) -> FloatArray:
    """Additive effect of a plant fault on all modelled sensors, (length, n_model)."""
    n, mag = event.length, event.magnitude
    k = np.arange(n, dtype=np.float64)
    growth = (k + 1) / n
    delta = np.zeros((n, len(_NAMES)))

    def add(name: str, values: FloatArray) -> None:
        delta[:, _IDX[name]] += values

    if event.kind == "tube_leak":
        # Make-up water for the leak: flow up while the boiler loses pressure and temperature.
        onset = 1.0 - np.exp(-(k + 1) / 8.0)
        add("feedwater_flow", flow_scale * 28.0 * mag * onset)
        add("steam_pressure", -6.0 * mag * onset)
        add("steam_temperature", -5.0 * mag * onset)
    elif event.kind == "bearing_degradation":
        # Wear grows: vibration (rougher, too) and friction heat rise together.
        env = 0.3 + 0.7 * growth**1.5
        add("turbine_vibration", 2.0 * mag * env + rng.normal(0.0, 0.15 * mag, n) * env)
        add("bearing_temperature", 9.0 * mag * env)
    elif event.kind == "fouling":
        # Ash on heat-transfer surfaces: less heat reaches the steam, more leaves with the gas.
        env = 0.4 + 0.6 * growth
        add("flue_gas_temperature", 16.0 * mag * env)
        add("steam_temperature", -4.0 * mag * env)
    return delta


class ThermalUnitSimulator:
    """Seeded simulator of one thermal unit's sensors; see the module docstring for the model."""

    def __init__(
        self,
        seed: int = 0,
        step_seconds: float = 1.0,
        day_seconds: float = 86400.0,
        start_time: float = 1_767_225_600.0,
        sensors: tuple[SensorSpec, ...] = THERMAL_UNIT_SENSORS,
        design: UnitDesign = REFERENCE_DESIGN,
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not step_seconds > 0 or not day_seconds > 0:
            raise ValueError("step_seconds and day_seconds must be positive")
        names = sensor_names(sensors)
        unknown = [n for n in names if n not in _IDX]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(f"sensors must be distinct names from {list(_NAMES)}; got {names}")
        self.seed = seed
        self.step_seconds = float(step_seconds)
        self.day_seconds = float(day_seconds)
        self.start_time = float(start_time)
        self.sensors = tuple(sensors)
        #: Ratings, steam conditions, flows (:func:`edge_agent.tools.plants.unit_design`).
        self.design = design
        self._models = _scaled_models(design)
        self._out_idx = np.array([_IDX[n] for n in names])
        self._lo = np.array([s.lo for s in sensors])
        self._hi = np.array([s.hi for s in sensors])
        # Stage 1: load behind its set-point, and every sensor's slow wander.
        stage1_taus = [_LOAD_LAG_SECONDS] + [_MODEL[n].wander_tau for n in _NAMES]
        self._stage1 = _LagBank(stage1_taus, self.step_seconds, _BLOCK)
        # Stage 2: plant sensors behind their load-dependent targets.
        self._stage2 = _LagBank([_MODEL[n].lag_tau for n in _PLANT], self.step_seconds, _BLOCK)
        a_wander = self._stage1.a[1:]
        sd = np.array([self._models[n].wander_sd for n in _NAMES])
        # Gain that makes a lagged white noise an OU process with the wanted stationary sd.
        self._wander_gain = sd * np.sqrt(1.0 - a_wander**2) / np.maximum(1.0 - a_wander, 1e-300)
        self._wander_sd = sd
        self._noise_sd = np.array([self._models[n].noise_sd for n in _NAMES])
        changes_per_step = _SETPOINT_CHANGES_PER_DAY * self.step_seconds / self.day_seconds
        self._p_setpoint_change = min(1.0, changes_per_step)

    def generate(self, n_steps: int, faults: Sequence[FaultEvent] = ()) -> SimulationResult:
        """``n_steps`` readings with ``faults`` injected; events are clipped to the run."""
        if n_steps < 0:
            raise ValueError("n_steps must be >= 0")
        parts = list(self._blocks(faults, n_steps))
        n_out = len(self.sensors)
        ts = np.concatenate([p[0] for p in parts]) if parts else np.empty(0)
        values = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, n_out))
        labels = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.int8)
        events = [
            dataclasses.replace(e, end=min(e.end, n_steps)) for e in faults if e.start < n_steps
        ]
        return SimulationResult(
            timestamps=ts[:n_steps],
            values=values[:n_steps],
            labels=labels[:n_steps],
            events=events,
            sensors=self.sensors,
        )

    def stream(
        self, faults: Sequence[FaultEvent] = (), n_steps: int | None = None
    ) -> Iterator[tuple[float, FloatArray, int]]:
        """Readings step by step as (timestamp, values row, label); endless if n_steps is None.

        Rows equal ``generate``'s for the same seed and faults: both iterate the same blocks.
        """
        if n_steps is not None and n_steps < 0:
            raise ValueError("n_steps must be >= 0")
        emitted = 0
        for ts, values, labels in self._blocks(faults, n_steps):
            for i in range(len(ts)):
                if n_steps is not None and emitted >= n_steps:
                    return
                yield float(ts[i]), values[i].copy(), int(labels[i])
                emitted += 1

    # -- the one code path -------------------------------------------------------------

    def _prepare(self, faults: Sequence[FaultEvent]) -> list[_PreparedFault]:
        names = sensor_names(self.sensors)
        prepared = []
        for event in faults:
            if event.sensor is not None and event.sensor not in names:
                raise ValueError(f"fault on unknown sensor {event.sensor!r}; sensors: {names}")
            rng = _fault_rng(self.seed, event)
            if event.kind == "stuck":
                assert event.sensor is not None
                prepared.append(_PreparedFault(event, None, [], names.index(event.sensor)))
            elif event.kind in PROCESS_FAULT_KINDS:
                delta = _process_fault_delta(event, rng, self.design.flow_scale)
                prepared.append(_PreparedFault(event, delta, list(range(len(_NAMES))), None))
            else:
                assert event.sensor is not None
                delta = _sensor_fault_delta(event, rng, self._models)[:, None]
                prepared.append(_PreparedFault(event, delta, [_IDX[event.sensor]], None))
        return prepared

    def _blocks(
        self, faults: Sequence[FaultEvent], n_steps: int | None
    ) -> Iterator[tuple[FloatArray, FloatArray, NDArray[np.int8]]]:
        """Full blocks of (timestamps, values, labels) until n_steps are covered (or forever)."""
        process = _ProcessRun(self)
        injector = _FaultInjector(self._prepare(faults))
        first = 0
        while n_steps is None or first < n_steps:
            ts = self.start_time + (first + np.arange(_BLOCK, dtype=np.float64)) * self.step_seconds
            model = process.next_block(ts)
            injector.add_effects(model, first)
            values = np.clip(model[:, self._out_idx], self._lo, self._hi)
            labels = injector.hold_stuck_and_label(values, first)
            yield ts, values, labels
            first += _BLOCK


class _ProcessRun:
    """Mutable state of one healthy-process run: set-point, lag states, random stream.

    Draws a fixed amount of randomness per block, so a run never depends on n_steps or on
    the faults injected into it.
    """

    def __init__(self, sim: ThermalUnitSimulator) -> None:
        self._sim = sim
        self._rng = np.random.default_rng([sim.seed, _PROCESS_STREAM])
        self._offset = self._draw_offsets(1)[0]
        self._wander0 = self._rng.normal(0.0, sim._wander_sd)
        self._stage1_state: FloatArray | None = None
        self._stage2_state: FloatArray | None = None

    def _draw_offsets(self, n: int) -> FloatArray:
        k = self._sim.design.load_scale
        limit = _SETPOINT_MAX_OFFSET_MW * k
        return np.clip(self._rng.normal(0.0, _SETPOINT_SD_MW * k, n), -limit, limit)

    def next_block(self, ts: FloatArray) -> FloatArray:
        """True process values plus measurement noise, (block, n_model) in model order."""
        sim, rng, n_model = self._sim, self._rng, len(_NAMES)
        steps = np.arange(_BLOCK)
        phase = np.mod(ts, sim.day_seconds) / sim.day_seconds
        ambient = np.sin(2.0 * np.pi * (phase - 0.35))

        change = rng.random(_BLOCK) < sim._p_setpoint_change
        new_offsets = self._draw_offsets(_BLOCK)
        white = rng.normal(0.0, 1.0, (_BLOCK, n_model))
        noise = rng.normal(0.0, 1.0, (_BLOCK, n_model)) * sim._noise_sd

        # Set-point offsets are piecewise constant: forward-fill the latest change.
        last_change = np.maximum.accumulate(np.where(change, steps, -1))
        offsets = np.where(last_change >= 0, new_offsets[np.maximum(last_change, 0)], self._offset)
        self._offset = float(offsets[-1])
        d = sim.design
        setpoint = np.clip(_daily_load(phase, d.load_scale) + offsets, d.min_load_mw, d.rated_mw)

        u1 = np.concatenate([setpoint[:, None], white * sim._wander_gain], axis=1)
        if self._stage1_state is None:  # start in steady state, wander from its stationary law
            self._stage1_state = np.concatenate([[setpoint[0]], self._wander0])
        y1 = sim._stage1.run(u1, self._stage1_state)
        self._stage1_state = y1[-1].copy()
        wander = y1[:, 1:]
        load = y1[:, 0] + wander[:, _LOAD]

        target = _targets(load, ambient, sim.design)
        if self._stage2_state is None:
            self._stage2_state = target[0].copy()
        y2 = sim._stage2.run(target, self._stage2_state)
        self._stage2_state = y2[-1].copy()

        model = np.empty((_BLOCK, n_model))
        model[:, _LOAD] = load  # load's wander is already in the load
        model[:, _PLANT_IDX] = y2 + wander[:, _PLANT_IDX]
        model += noise
        return model


class _FaultInjector:
    """Applies prepared faults to consecutive blocks, remembering what stuck sensors repeat."""

    def __init__(self, prepared: list[_PreparedFault]) -> None:
        # stuck last and in start order: a flat-line holds the final (faulted) previous value
        self._additive = [p for p in prepared if p.delta is not None]
        self._stuck = sorted((p for p in prepared if p.delta is None), key=lambda p: p.event.start)
        self._events = [p.event for p in prepared]
        self._held: dict[int, float] = {}  # index in _stuck -> the value it repeats
        self._last_row: FloatArray | None = None

    @staticmethod
    def _overlap(event: FaultEvent, first: int) -> tuple[int, int]:
        return max(event.start, first), min(event.end, first + _BLOCK)

    def add_effects(self, model: FloatArray, first: int) -> None:
        for p in self._additive:
            assert p.delta is not None
            lo, hi = self._overlap(p.event, first)
            if lo < hi:
                start = p.event.start
                model[lo - first : hi - first, p.model_columns] += p.delta[lo - start : hi - start]

    def hold_stuck_and_label(self, values: FloatArray, first: int) -> NDArray[np.int8]:
        for key, p in enumerate(self._stuck):
            assert p.column is not None
            lo, hi = self._overlap(p.event, first)
            if lo >= hi:
                continue
            if key not in self._held:
                if lo > first:
                    self._held[key] = float(values[lo - first - 1, p.column])
                elif self._last_row is not None:
                    self._held[key] = float(self._last_row[p.column])
                else:  # stuck from step 0: repeats the first reading
                    self._held[key] = float(values[0, p.column])
            values[lo - first : hi - first, p.column] = self._held[key]
        self._last_row = values[-1].copy()
        labels = np.zeros(_BLOCK, dtype=np.int8)
        for event in self._events:
            lo, hi = self._overlap(event, first)
            if lo < hi:
                labels[lo - first : hi - first] = 1
        return labels


def random_fault_schedule(
    n_steps: int,
    n_events: int,
    seed: int = 0,
    kinds: Sequence[str] = FAULT_KINDS,
    min_len: int = 30,
    max_len: int = 300,
    warmup: int = 300,
    gap: int = 120,
    sensors: Sequence[str] = tuple(sensor_names(THERMAL_UNIT_SENSORS)),
) -> list[FaultEvent]:
    """Non-overlapping random faults in ``[warmup, n_steps)``, sorted, at least ``gap`` apart.

    Kinds are dealt in shuffled rounds, so ``n_events >= len(kinds)`` covers every kind.
    Single-sensor faults pick a sensor from ``sensors``; magnitudes are 0.8–1.5.
    """
    kinds = list(dict.fromkeys(kinds))
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be non-empty and from {FAULT_KINDS}; got {unknown or kinds}")
    if n_events < 0 or warmup < 0 or gap < 0 or not 1 <= min_len <= max_len:
        raise ValueError("need n_events, warmup, gap >= 0 and 1 <= min_len <= max_len")
    if not sensors and any(k in SENSOR_FAULT_KINDS for k in kinds):
        raise ValueError("single-sensor fault kinds need at least one sensor")
    if n_events == 0:
        return []
    budget = n_steps - warmup - (n_events - 1) * gap  # steps left for the events themselves
    if budget < n_events * min_len:
        raise ValueError(
            f"{n_events} events of >= {min_len} steps with gap {gap} after warmup {warmup} "
            f"do not fit in {n_steps} steps"
        )
    rng = np.random.default_rng([seed, _SCHEDULE_STREAM])
    lengths = rng.integers(min_len, max_len + 1, n_events)
    if lengths.sum() > budget:  # shrink the excess over min_len proportionally
        excess = lengths - min_len
        lengths = min_len + excess * (budget - n_events * min_len) // excess.sum()
    slack = int(budget - lengths.sum())
    cuts = np.sort(rng.integers(0, slack + 1, n_events))
    spacing = np.diff(cuts, prepend=0)
    rounds = -(-n_events // len(kinds))
    dealt = [str(k) for _ in range(rounds) for k in rng.permutation(kinds)][:n_events]

    events = []
    cursor = warmup
    for length, space, kind in zip(lengths.tolist(), spacing.tolist(), dealt, strict=True):
        start = cursor + space
        sensor = str(rng.choice(list(sensors))) if kind in SENSOR_FAULT_KINDS else None
        magnitude = round(float(rng.uniform(0.8, 1.5)), 3)
        events.append(FaultEvent(kind, start, start + length, sensor, magnitude))
        cursor = start + length + gap
    return events


def settled_run(
    n_steps: int,
    faults: Sequence[FaultEvent] = (),
    seed: int = 0,
    start_time: float = 1_767_225_600.0,
    day_seconds: float = 3600.0,
    burn_in: int = 1800,
    step_seconds: float = 1.0,
) -> SimulationResult:
    """A unit that was already running: ``burn_in`` steps are simulated before
    ``start_time`` and dropped (the simulator starts away from equilibrium). Fault steps
    count from the first returned step."""
    shifted = [dataclasses.replace(e, start=e.start + burn_in, end=e.end + burn_in) for e in faults]
    sim = ThermalUnitSimulator(
        seed=seed,
        step_seconds=step_seconds,
        day_seconds=day_seconds,
        start_time=start_time - burn_in * step_seconds,
    )
    r = sim.generate(n_steps + burn_in, shifted)
    return SimulationResult(
        timestamps=r.timestamps[burn_in:],
        values=r.values[burn_in:],
        labels=r.labels[burn_in:],
        events=[
            dataclasses.replace(e, start=e.start - burn_in, end=e.end - burn_in) for e in r.events
        ],
        sensors=r.sensors,
    )


def generate_dataset(
    n_steps: int,
    n_events: int,
    seed: int = 0,
    day_seconds: float = 3600.0,
    design: UnitDesign = REFERENCE_DESIGN,
) -> SimulationResult:
    """A labelled run with a random fault schedule, 1 s steps and a compressed day."""
    sim = ThermalUnitSimulator(seed=seed, day_seconds=day_seconds, design=design)
    return sim.generate(n_steps, random_fault_schedule(n_steps, n_events, seed=seed))


def generate_fleet(
    n_units: int,
    n_steps: int,
    n_events: int,
    seed: int = 0,
    day_seconds: float = 3600.0,
    burn_in: int = 1800,
    start_time: float = 1_767_225_600.0,
    designs: Sequence[UnitDesign] = (REFERENCE_DESIGN,),
) -> SimulationResult:
    """Several units (seeds ``seed*1000 + u``) one after another on one continuous 1 s grid.

    Training on one simulated unit teaches the models that unit's particular levels; a fleet
    teaches what normal looks like for units of the same design. Each unit is simulated for
    ``burn_in`` extra steps that are dropped (the simulator starts away from equilibrium).
    ``n_steps`` and ``n_events`` are totals, shared out evenly. Unit ``u`` has design
    ``designs[u % len(designs)]`` (one design: units of the same design; one per plant:
    a fleet of different real plants).
    """
    if n_units < 1:
        raise ValueError("n_units must be >= 1")
    if not designs:
        raise ValueError("designs must not be empty")
    per_unit, per_events = n_steps // n_units, n_events // n_units
    parts: list[SimulationResult] = []
    for u in range(n_units):
        unit_seed = seed * 1000 + u
        faults = [
            dataclasses.replace(e, start=e.start + burn_in, end=e.end + burn_in)
            for e in random_fault_schedule(per_unit, per_events, seed=unit_seed)
        ]
        sim = ThermalUnitSimulator(
            seed=unit_seed,
            day_seconds=day_seconds,
            start_time=start_time + u * 7919.0,
            design=designs[u % len(designs)],
        )
        r = sim.generate(per_unit + burn_in, faults)
        offset = u * per_unit
        events = [
            dataclasses.replace(e, start=e.start - burn_in + offset, end=e.end - burn_in + offset)
            for e in r.events
        ]
        parts.append(
            SimulationResult(
                timestamps=start_time + offset + np.arange(per_unit, dtype=np.float64),
                values=r.values[burn_in:],
                labels=r.labels[burn_in:],
                events=events,
                sensors=r.sensors,
            )
        )
    return SimulationResult(
        timestamps=np.concatenate([p.timestamps for p in parts]),
        values=np.concatenate([p.values for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        events=[e for p in parts for e in p.events],
        sensors=parts[0].sensors,
    )


__all__: list[str] = [
    "FAULT_KINDS",
    "PROCESS_FAULT_KINDS",
    "RATED_LOAD_MW",
    "SENSOR_FAULT_KINDS",
    "FaultEvent",
    "SimulationResult",
    "ThermalUnitSimulator",
    "generate_dataset",
    "generate_fleet",
    "random_fault_schedule",
    "settled_run",
]
