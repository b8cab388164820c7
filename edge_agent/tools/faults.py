"""Injected faults: the kinds, one event, its per-step effect, the injector and random schedules.

Sensor faults (spike, drift, stuck, noise burst) corrupt one reading while the process stays
healthy; process faults (tube leak, bearing degradation, fouling) move several sensors
together. Each event's randomness depends only on the seed and the event, so a run with
faults equals the same run without them outside the fault windows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names
from edge_agent.tools.unit_model import (
    BLOCK,
    FAULT_STREAM,
    MODEL_INDEX,
    MODEL_NAMES,
    SCHEDULE_STREAM,
    FloatArray,
    SensorModel,
)

#: Faults that corrupt one sensor's reading; the process itself is healthy.
SENSOR_FAULT_KINDS: tuple[str, ...] = ("spike", "drift", "stuck", "noise_burst")
#: Faults of the plant itself; they move several sensors together.
PROCESS_FAULT_KINDS: tuple[str, ...] = ("tube_leak", "bearing_degradation", "fouling")
FAULT_KINDS: tuple[str, ...] = SENSOR_FAULT_KINDS + PROCESS_FAULT_KINDS


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
class PreparedFault:
    """A fault turned into per-step effects, drawn once so any block split gives the same run."""

    event: FaultEvent
    delta: FloatArray | None  # (length, len(model_columns)) additive effect; None for stuck
    model_columns: list[int]  # model columns the delta adds to
    column: int | None  # output column of a stuck sensor


def fault_rng(seed: int, event: FaultEvent) -> np.random.Generator:
    """Randomness of one event depends only on the seed and the event itself."""
    sensor = len(MODEL_NAMES) if event.sensor is None else MODEL_INDEX[event.sensor]
    key = [seed, FAULT_STREAM, FAULT_KINDS.index(event.kind), sensor, event.start, event.end]
    return np.random.default_rng(key)


def sensor_fault_delta(
    event: FaultEvent, rng: np.random.Generator, models: dict[str, SensorModel]
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


def process_fault_delta(
    event: FaultEvent, rng: np.random.Generator, flow_scale: float = 1.0
) -> FloatArray:
    """Additive effect of a plant fault on all modelled sensors, (length, n_model)."""
    n, mag = event.length, event.magnitude
    k = np.arange(n, dtype=np.float64)
    growth = (k + 1) / n
    delta = np.zeros((n, len(MODEL_NAMES)))

    def add(name: str, values: FloatArray) -> None:
        delta[:, MODEL_INDEX[name]] += values

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


class FaultInjector:
    """Applies prepared faults to consecutive blocks, remembering what stuck sensors repeat."""

    def __init__(self, prepared: list[PreparedFault]) -> None:
        # stuck last and in start order: a flat-line holds the final (faulted) previous value
        self._additive = [p for p in prepared if p.delta is not None]
        self._stuck = sorted((p for p in prepared if p.delta is None), key=lambda p: p.event.start)
        self._events = [p.event for p in prepared]
        self._held: dict[int, float] = {}  # index in _stuck -> the value it repeats
        self._last_row: FloatArray | None = None

    @staticmethod
    def _overlap(event: FaultEvent, first: int) -> tuple[int, int]:
        return max(event.start, first), min(event.end, first + BLOCK)

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
        labels = np.zeros(BLOCK, dtype=np.int8)
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
    rng = np.random.default_rng([seed, SCHEDULE_STREAM])
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
