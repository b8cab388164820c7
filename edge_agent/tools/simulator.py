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

The physics is in :mod:`edge_agent.tools.unit_model`, the faults in
:mod:`edge_agent.tools.faults`, the run as data and CSV in :mod:`edge_agent.tools.simulated_run`;
this module runs them a block at a time.

numpy only: this runs on the edge box (``edge-agent simulate``) as well as in training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, SensorSpec, sensor_names
from edge_agent.tools.faults import (
    FAULT_KINDS,
    PROCESS_FAULT_KINDS,
    SENSOR_FAULT_KINDS,
    FaultEvent,
    FaultInjector,
    PreparedFault,
    fault_rng,
    process_fault_delta,
    random_fault_schedule,
    sensor_fault_delta,
)
from edge_agent.tools.plants import REFERENCE_DESIGN, UnitDesign
from edge_agent.tools.simulated_run import SimulationResult
from edge_agent.tools.unit_model import (
    BLOCK,
    LOAD_COLUMN,
    LOAD_LAG_SECONDS,
    MODEL,
    MODEL_INDEX,
    MODEL_NAMES,
    PLANT_COLUMNS,
    PLANT_NAMES,
    PROCESS_STREAM,
    RATED_LOAD_MW,
    SETPOINT_CHANGES_PER_DAY,
    SETPOINT_MAX_OFFSET_MW,
    SETPOINT_SD_MW,
    FloatArray,
    LagBank,
    daily_load,
    scaled_models,
    targets,
)


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
        unknown = [n for n in names if n not in MODEL_INDEX]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(
                f"sensors must be distinct names from {list(MODEL_NAMES)}; got {names}"
            )
        self.seed = seed
        self.step_seconds = float(step_seconds)
        self.day_seconds = float(day_seconds)
        self.start_time = float(start_time)
        self.sensors = tuple(sensors)
        #: Ratings, steam conditions, flows (:func:`edge_agent.tools.plants.unit_design`).
        self.design = design
        self._models = scaled_models(design)
        self._out_idx = np.array([MODEL_INDEX[n] for n in names])
        self._lo = np.array([s.lo for s in sensors])
        self._hi = np.array([s.hi for s in sensors])
        # Stage 1: load behind its set-point, and every sensor's slow wander.
        stage1_taus = [LOAD_LAG_SECONDS] + [MODEL[n].wander_tau for n in MODEL_NAMES]
        self._stage1 = LagBank(stage1_taus, self.step_seconds, BLOCK)
        # Stage 2: plant sensors behind their load-dependent targets.
        self._stage2 = LagBank([MODEL[n].lag_tau for n in PLANT_NAMES], self.step_seconds, BLOCK)
        a_wander = self._stage1.a[1:]
        sd = np.array([self._models[n].wander_sd for n in MODEL_NAMES])
        # Gain that makes a lagged white noise an OU process with the wanted stationary sd.
        self._wander_gain = sd * np.sqrt(1.0 - a_wander**2) / np.maximum(1.0 - a_wander, 1e-300)
        self._wander_sd = sd
        self._noise_sd = np.array([self._models[n].noise_sd for n in MODEL_NAMES])
        changes_per_step = SETPOINT_CHANGES_PER_DAY * self.step_seconds / self.day_seconds
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

    def _prepare(self, faults: Sequence[FaultEvent]) -> list[PreparedFault]:
        names = sensor_names(self.sensors)
        prepared = []
        for event in faults:
            if event.sensor is not None and event.sensor not in names:
                raise ValueError(f"fault on unknown sensor {event.sensor!r}; sensors: {names}")
            rng = fault_rng(self.seed, event)
            if event.kind == "stuck":
                assert event.sensor is not None
                prepared.append(PreparedFault(event, None, [], names.index(event.sensor)))
            elif event.kind in PROCESS_FAULT_KINDS:
                delta = process_fault_delta(event, rng, self.design.flow_scale)
                prepared.append(PreparedFault(event, delta, list(range(len(MODEL_NAMES))), None))
            else:
                assert event.sensor is not None
                delta = sensor_fault_delta(event, rng, self._models)[:, None]
                prepared.append(PreparedFault(event, delta, [MODEL_INDEX[event.sensor]], None))
        return prepared

    def _blocks(
        self, faults: Sequence[FaultEvent], n_steps: int | None
    ) -> Iterator[tuple[FloatArray, FloatArray, NDArray[np.int8]]]:
        """Full blocks of (timestamps, values, labels) until n_steps are covered (or forever)."""
        process = _ProcessRun(self)
        injector = FaultInjector(self._prepare(faults))
        first = 0
        while n_steps is None or first < n_steps:
            ts = self.start_time + (first + np.arange(BLOCK, dtype=np.float64)) * self.step_seconds
            model = process.next_block(ts)
            injector.add_effects(model, first)
            values = np.clip(model[:, self._out_idx], self._lo, self._hi)
            labels = injector.hold_stuck_and_label(values, first)
            yield ts, values, labels
            first += BLOCK


class _ProcessRun:
    """Mutable state of one healthy-process run: set-point, lag states, random stream.

    Draws a fixed amount of randomness per block, so a run never depends on n_steps or on
    the faults injected into it.
    """

    def __init__(self, sim: ThermalUnitSimulator) -> None:
        self._sim = sim
        self._rng = np.random.default_rng([sim.seed, PROCESS_STREAM])
        self._offset = self._draw_offsets(1)[0]
        self._wander0 = self._rng.normal(0.0, sim._wander_sd)
        self._stage1_state: FloatArray | None = None
        self._stage2_state: FloatArray | None = None

    def _draw_offsets(self, n: int) -> FloatArray:
        k = self._sim.design.load_scale
        limit = SETPOINT_MAX_OFFSET_MW * k
        return np.clip(self._rng.normal(0.0, SETPOINT_SD_MW * k, n), -limit, limit)

    def next_block(self, ts: FloatArray) -> FloatArray:
        """True process values plus measurement noise, (block, n_model) in model order."""
        sim, rng, n_model = self._sim, self._rng, len(MODEL_NAMES)
        steps = np.arange(BLOCK)
        phase = np.mod(ts, sim.day_seconds) / sim.day_seconds
        ambient = np.sin(2.0 * np.pi * (phase - 0.35))

        change = rng.random(BLOCK) < sim._p_setpoint_change
        new_offsets = self._draw_offsets(BLOCK)
        white = rng.normal(0.0, 1.0, (BLOCK, n_model))
        noise = rng.normal(0.0, 1.0, (BLOCK, n_model)) * sim._noise_sd

        # Set-point offsets are piecewise constant: forward-fill the latest change.
        last_change = np.maximum.accumulate(np.where(change, steps, -1))
        offsets = np.where(last_change >= 0, new_offsets[np.maximum(last_change, 0)], self._offset)
        self._offset = float(offsets[-1])
        d = sim.design
        setpoint = np.clip(daily_load(phase, d.load_scale) + offsets, d.min_load_mw, d.rated_mw)

        u1 = np.concatenate([setpoint[:, None], white * sim._wander_gain], axis=1)
        if self._stage1_state is None:  # start in steady state, wander from its stationary law
            self._stage1_state = np.concatenate([[setpoint[0]], self._wander0])
        y1 = sim._stage1.run(u1, self._stage1_state)
        self._stage1_state = y1[-1].copy()
        wander = y1[:, 1:]
        load = y1[:, 0] + wander[:, LOAD_COLUMN]

        target = targets(load, ambient, sim.design)
        if self._stage2_state is None:
            self._stage2_state = target[0].copy()
        y2 = sim._stage2.run(target, self._stage2_state)
        self._stage2_state = y2[-1].copy()

        model = np.empty((BLOCK, n_model))
        model[:, LOAD_COLUMN] = load  # load's wander is already in the load
        model[:, PLANT_COLUMNS] = y2 + wander[:, PLANT_COLUMNS]
        model += noise
        return model


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
    "ThermalUnitSimulator",
    "generate_dataset",
    "generate_fleet",
    "random_fault_schedule",
    "settled_run",
]
