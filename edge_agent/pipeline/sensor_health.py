"""Sensor health: a transmitter that is frozen or noisy, judged against what training saw.

Many sensor faults leave the process alone and barely move a window autoencoder — a
stuck transmitter repeats a plausible value, a failing one adds noise around the right
level — yet an operator must know the reading cannot be trusted. Both are measured against
limits training derived from the fit data, label-free
(``edge_agent.pipeline.manifest.SensorEntry``):

* **frozen**: the same value (exactly) for ``frozen_limit_steps`` consecutive steps —
  twice the longest run of one value in the fit data (historians that compress by
  deadband repeat values, so the limit is learned, never assumed);
* **noisy**: the *roughness* (standard deviation of the step-to-step changes over the last
  ``rolling`` steps, the forest's feature) above ``roughness_hi`` — placed like the
  ensemble's alarm threshold: above the highest level the fit data held for the alarm's
  on-delay, plus the exponential tail's margin for the horizon (``training.calibration``).

Either raises the sensor's ``bad_quality`` alarm (with the reason), like an impossible
reading. Pure and per step; carried-forward values (a missing reading) never count as
frozen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.sensors import SensorSpec

#: Why a sensor's readings are not trusted (``Alert.quality``).
QUALITY_REASONS: tuple[str, ...] = ("impossible", "frozen", "noisy")


class SensorHealth:
    """Frozen and noisy checks for every unit of one agent."""

    def __init__(self, sensors: Sequence[SensorSpec], rolling: int) -> None:
        self.names = [s.name for s in sensors]
        self.rolling = rolling
        self._frozen_limit = np.array([s.frozen_limit_steps or 0 for s in sensors], dtype=np.int64)
        self._rough_hi = np.array(
            [np.inf if s.roughness_hi is None else s.roughness_hi for s in sensors],
            dtype=np.float64,
        )
        self._checks_frozen = bool(self._frozen_limit.any())
        #: Run length at which a column is frozen (never, for a sensor without a limit).
        self._frozen_at = np.where(
            self._frozen_limit > 0, self._frozen_limit, np.iinfo(np.int64).max
        )
        self.enabled = bool(self._checks_frozen or np.isfinite(self._rough_hi).any())
        self._last: dict[str, NDArray[np.float32]] = {}
        self._runs: dict[str, NDArray[np.int64]] = {}

    def frozen(self, unit: str, row: NDArray[np.float32], carried: Sequence[int]) -> list[int]:
        """Columns frozen at this step (``row``: the closed step, NaN where stale).

        Called once per closed step: in-place updates on two small arrays per unit, since
        array allocation, not arithmetic, is what costs here."""
        if not self._checks_frozen:
            return []
        last = self._last.get(unit)
        runs = self._runs.get(unit)
        if last is None or runs is None:
            self._last[unit] = row.copy()
            self._runs[unit] = np.ones(len(row), dtype=np.int64)
            return []
        same = row == last  # NaN never equals: a stale sensor is not frozen
        if carried:  # a carried value neither extends nor ends a run
            cols = list(carried)
            kept = runs[cols]
            runs *= same
            runs += 1
            runs[cols] = kept
            held = last[cols]
            last[:] = row
            last[cols] = held
        else:
            runs *= same
            runs += 1
            last[:] = row
        hit = runs >= self._frozen_at
        if not hit.any():
            return []
        return [int(c) for c in np.flatnonzero(hit)]

    def noisy(self, windows: NDArray[np.float32]) -> NDArray[np.bool_]:
        """(batch, sensors): roughness of each window's last ``rolling`` steps too high."""
        if not np.isfinite(self._rough_hi).any():
            return np.zeros((len(windows), len(self.names)), dtype=bool)
        tail = np.asarray(windows[:, -self.rolling :, :], dtype=np.float64)
        rough = np.diff(tail, axis=1).std(axis=1)
        return np.asarray(rough > self._rough_hi)


def roughness_series(values: NDArray[np.floating], rolling: int) -> NDArray[np.float64]:
    """Roughness of every ``rolling``-step window of a (steps, sensors) series, as the agent
    computes it (row i: the window ending at step i + rolling - 1)."""
    x = np.asarray(values, dtype=np.float32).astype(np.float64)
    if len(x) < rolling:
        return np.empty((0, x.shape[1]))
    view = np.lib.stride_tricks.sliding_window_view(x, rolling, axis=0)  # (n, sensors, rolling)
    return np.asarray(np.diff(view, axis=2).std(axis=2))


def longest_runs(values: NDArray[np.floating]) -> NDArray[np.int64]:
    """Per sensor: the longest run of one exact value in a (steps, sensors) series."""
    x = np.asarray(values, dtype=np.float32)
    out = np.ones(x.shape[1], dtype=np.int64)
    for c in range(x.shape[1]):
        change = np.flatnonzero(np.diff(x[:, c]) != 0)
        edges = np.concatenate(([-1], change, [len(x) - 1]))
        out[c] = int(np.diff(edges).max()) if len(x) else 0
    return out
