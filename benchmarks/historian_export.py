"""A plant's historian export, as a new site hands it over: 10 s rows with the quirks of real
exports, for judging ``edge-train train`` → ``edge-agent replay`` on data nothing was tuned on.

The simulator (``edge_agent.tools.simulator``) makes smooth analog signals at 1 s; SKAB is one
pump at 1 s. A historian export of a thermal unit looks different, and every quirk below
once broke training or raised a false alarm (see the README's "A plant's own export"):

* the load **setpoint holds** 20–90 min, then ramps at 2 MW/min to a new level (250–500 MW);
* a control **valve with a deadband**: it moves only when demand leaves a 1 % band, in 0.5 %
  steps, so it holds one value for an hour or more at base load;
* **coarse resolution**: steam temperature in whole degrees, pressure to 3 decimals;
* a **constant tag** (``aux_pump_on``), a sensor column that never moves;
* **outages**: a 15-minute historian outage (rows missing), a 30 s one, and three 60 s spells
  where two transmitters report nothing (empty cells).

Faults (:data:`FAULTS`) are injected into a copy, at fixed fractions of the day, each a kind
an operator must hear about: a drifting steam temperature, a frozen pressure transmitter, a
noisy flow transmitter, rising vibration and lost feedwater flow at unchanged load.
Deterministic for a seed; no data is read or downloaded.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

STEP_SECONDS = 10.0
COLUMNS = (
    "load_mw",
    "valve_pos_pct",
    "steam_temp_c",
    "steam_press_mpa",
    "fw_flow_tph",
    "vib_mm_s",
    "aux_pump_on",
)
#: Decimals each column is exported with (the historian's resolution).
DECIMALS = {
    "load_mw": 1,
    "valve_pos_pct": 1,
    "steam_temp_c": 0,
    "steam_press_mpa": 3,
    "fw_flow_tph": 1,
    "vib_mm_s": 2,
    "aux_pump_on": 0,
}


@dataclass(frozen=True)
class Fault:
    """``kind`` on ``sensor`` from ``at`` (fraction of the export) for ``minutes``."""

    kind: str
    sensor: str
    at: float
    minutes: float


#: Fixed before the benchmark was first run (2026-12-06); never tuned to its results.
FAULTS = (
    Fault("drift", "steam_temp_c", 0.15, 30),  # +10 degC over 30 min
    Fault("frozen", "steam_press_mpa", 0.32, 45),  # holds its last value
    Fault("noisy", "fw_flow_tph", 0.50, 20),  # noise sd 3 -> 15 t/h
    Fault("rise", "vib_mm_s", 0.66, 30),  # +1.5 mm/s over 10 min, then held
    Fault("flow_loss", "fw_flow_tph", 0.83, 30),  # -6 % at unchanged load
)


@dataclass
class Export:
    """One export: values per column on a regular grid, which cells are missing, and which
    steps are labelled faulty (for judging only; never written to the file)."""

    start: dt.datetime
    values: dict[str, NDArray[np.float64]]
    missing_rows: NDArray[np.bool_]
    missing_cells: dict[str, NDArray[np.bool_]]
    labels: NDArray[np.bool_]
    events: list[tuple[Fault, int, int]]

    @property
    def steps(self) -> int:
        return len(self.missing_rows)

    def timestamp(self, step: int) -> float:
        return self.start.timestamp() + STEP_SECONDS * step

    def write_csv(self, path: Path) -> int:
        """The export as the historian writes it; returns the rows written."""
        rows = 0
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["time", *COLUMNS])
            for k in range(self.steps):
                if self.missing_rows[k]:
                    continue
                ts = self.start + dt.timedelta(seconds=STEP_SECONDS * k)
                cells = [
                    ""
                    if self.missing_cells.get(c) is not None and self.missing_cells[c][k]
                    else f"{self.values[c][k]:.{DECIMALS[c]}f}"
                    for c in COLUMNS
                ]
                w.writerow([ts.strftime("%Y-%m-%dT%H:%M:%SZ"), *cells])
                rows += 1
        return rows


def _load_setpoint(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    load = np.empty(n)
    cur, i = 400.0, 0
    while i < n:
        hold = int(rng.integers(120, 540))  # 20-90 min of 10 s steps
        load[i : i + hold] = cur
        i += hold
        new = float(np.clip(cur + rng.choice([-1, 1]) * rng.uniform(20, 80), 250, 500))
        ramp = np.linspace(cur, new, max(1, int(abs(new - cur) / 2 * 6)))  # 2 MW/min
        take = max(0, min(len(ramp), n - i))
        load[i : i + take] = ramp[:take]
        i += len(ramp)
        cur = new
    return load


def healthy_export(seed: int, start: str, hours: float = 24.0) -> Export:
    """A healthy unit's export of ``hours`` from ``start`` (ISO date, UTC)."""
    rng = np.random.default_rng([seed, 2026])
    n = round(hours * 3600 / STEP_SECONDS)
    setpoint = _load_setpoint(rng, n)
    load = setpoint + rng.normal(0, 0.8, n)
    demand = 10 + setpoint / 6
    valve = np.empty(n)
    held = demand[0]
    for k in range(n):
        if abs(demand[k] - held) > 1.0:  # deadband
            held = demand[k]
        valve[k] = round(held * 2) / 2
    day = 2 * np.pi * np.arange(n) * STEP_SECONDS / 86400 + rng.uniform(0, 2 * np.pi)
    temp = 538 + 0.01 * (setpoint - 400) + 0.5 * np.sin(day) + rng.normal(0, 0.3, n)
    values = {
        "load_mw": load,
        "valve_pos_pct": valve,
        "steam_temp_c": temp,
        "steam_press_mpa": 16.5 + 0.004 * (setpoint - 400) + rng.normal(0, 0.05, n),
        "fw_flow_tph": 1.05 * load + rng.normal(0, 3, n),
        "vib_mm_s": 2.1 + 0.001 * (setpoint - 400) + np.abs(rng.normal(0, 0.15, n)),
        "aux_pump_on": np.ones(n),
    }
    missing_rows = np.zeros(n, dtype=bool)
    outage = int(rng.integers(n // 10, n - n // 10))
    missing_rows[outage : outage + 90] = True  # 15 min
    short = int(rng.integers(n // 10, n - n // 10))
    missing_rows[short : short + 3] = True  # 30 s
    cells = {c: np.zeros(n, dtype=bool) for c in ("fw_flow_tph", "vib_mm_s")}
    for at in rng.integers(100, n - 100, 3):
        for mask in cells.values():
            mask[int(at) : int(at) + 6] = True  # 60 s of empty cells
    return Export(
        start=dt.datetime.fromisoformat(start).replace(tzinfo=dt.UTC),
        values=values,
        missing_rows=missing_rows,
        missing_cells=cells,
        labels=np.zeros(n, dtype=bool),
        events=[],
    )


def with_faults(export: Export, seed: int, faults: tuple[Fault, ...] = FAULTS) -> Export:
    """A copy of ``export`` with ``faults`` injected and labelled; a fault never starts
    inside an outage (it is moved past it) so each one is seen."""
    rng = np.random.default_rng([seed, 7])
    values = {c: v.copy() for c, v in export.values.items()}
    labels = np.zeros(export.steps, dtype=bool)
    events = []
    for fault in faults:
        a = round(fault.at * export.steps)
        b = min(export.steps, a + round(fault.minutes * 60 / STEP_SECONDS))
        while export.missing_rows[a:b].any():
            a, b = a + 1, min(export.steps, b + 1)
        n = b - a
        x = values[fault.sensor]
        ramp = np.linspace(0, 1, n)
        if fault.kind == "drift":
            x[a:b] += 10.0 * ramp
        elif fault.kind == "frozen":
            x[a:b] = x[a - 1]
        elif fault.kind == "noisy":
            x[a:b] += rng.normal(0, np.sqrt(15.0**2 - 3.0**2), n)
        elif fault.kind == "rise":
            x[a:b] += 1.5 * np.minimum(1.0, ramp * 3)
        elif fault.kind == "flow_loss":
            x[a:b] *= 0.94
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        labels[a:b] = True
        events.append((fault, a, b))
    return Export(
        start=export.start,
        values=values,
        missing_rows=export.missing_rows,
        missing_cells=export.missing_cells,
        labels=labels,
        events=events,
    )
