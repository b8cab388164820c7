"""A simulated run as data (readings, per-step labels, the fault events behind them) and as the
labelled CSV that ``edge-train generate`` writes and ``edge-train train`` reads.

Kept apart from the simulator (:mod:`edge_agent.tools.simulator`) so that the file format has
one owner whatever produced the run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.alerts import rfc3339
from edge_agent.pipeline.sensors import SensorSpec, sensor_names
from edge_agent.tools.faults import FaultEvent
from edge_agent.tools.unit_model import FloatArray


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
