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
  Sets trained since 2026-12-06 leave the ``roughness_trim`` (:data:`ROUGHNESS_TRIM`)
  largest changes of the window out: a step in level is *one* large change, and it is the
  process moving (the models' evidence), not a bad transmitter; noise and spikes are many
  changes (a spike is two, up and back). Measured on SKAB's healthy pump (fitted on its
  first half): the untrimmed check called both accelerometers noisy when they stepped down
  together by five noise widths.

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
#: The largest step changes of a window that training leaves out of the roughness.
ROUGHNESS_TRIM = 1


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
        self._trim = np.array([s.roughness_trim for s in sensors], dtype=np.int64)
        if len(self._trim) and (self._trim.min() < 0 or self._trim.max() > rolling - 2):
            raise ValueError(f"roughness_trim must be 0..{rolling - 2} for {rolling} steps")
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
        rough = change_roughness(np.diff(tail, axis=1), self._trim, axis=1)
        return np.asarray(rough > self._rough_hi)


def change_roughness(
    changes: NDArray[np.float64], trim: NDArray[np.int64] | int, axis: int
) -> NDArray[np.float64]:
    """Standard deviation of ``changes`` along ``axis``, leaving out each column's ``trim``
    largest (by magnitude; ``trim`` broadcasts over the last axis, the sensors).

    With no trim this is exactly ``changes.std(axis)``, so sets trained before trimming
    existed are judged as they were."""
    trims = np.broadcast_to(np.asarray(trim, dtype=np.int64), changes.shape[-1:])
    if not trims.any():
        return np.asarray(changes.std(axis=axis))
    k = int(trims[0])
    if (trims == k).all():  # the usual case: sums over the window minus the k left out
        top = np.argpartition(-np.abs(changes), k - 1, axis=axis)
        left_out = np.take_along_axis(changes, np.take(top, range(k), axis=axis), axis=axis)
        n = changes.shape[axis] - k
        mean = (changes.sum(axis=axis) - left_out.sum(axis=axis)) / n
        centred = np.expand_dims(mean, axis)
        sq = ((changes - centred) ** 2).sum(axis=axis) - ((left_out - centred) ** 2).sum(axis=axis)
        return np.asarray(np.sqrt(np.maximum(sq, 0.0) / n))
    order = np.argsort(-np.abs(changes), axis=axis, kind="stable")
    keep = np.argsort(order, axis=axis, kind="stable") >= trims  # sensors: the last axis
    n_kept = keep.sum(axis=axis)
    mean = np.where(keep, changes, 0.0).sum(axis=axis) / n_kept
    dev = np.where(keep, changes - np.expand_dims(mean, axis), 0.0)
    return np.asarray(np.sqrt((dev * dev).sum(axis=axis) / n_kept))


def roughness_series(
    values: NDArray[np.floating], rolling: int, trim: int = 0
) -> NDArray[np.float64]:
    """Roughness of every ``rolling``-step window of a (steps, sensors) series, as the agent
    computes it (row i: the window ending at step i + rolling - 1)."""
    x = np.asarray(values, dtype=np.float32).astype(np.float64)
    if len(x) < rolling:
        return np.empty((0, x.shape[1]))
    view = np.lib.stride_tricks.sliding_window_view(x, rolling, axis=0)  # (n, sensors, rolling)
    changes = np.diff(view, axis=2).transpose(0, 2, 1)  # (n, rolling - 1, sensors)
    return change_roughness(changes, trim, axis=1)


def roughness_floor(
    values: NDArray[np.floating] | Sequence[NDArray[np.floating]], rolling: int, trim: int
) -> NDArray[np.float64]:
    """Per sensor: the roughness of a window in which half the step changes are the sensor's
    typical move (the median non-zero change in ``values``, or within each of a sequence of
    stretches) and the rest none.

    The lowest ``roughness_hi`` training may place. A held or coarsely quantised signal (a
    valve position that moves only past a deadband, a temperature in whole degrees) has a
    roughness of exactly 0 in nearly every fit window once its one move is trimmed, so a limit
    placed on the fit data alone would call its next ordinary double move "noisy" (and the
    limit could round below zero). 0 for a sensor that never moved."""
    parts = [values] if isinstance(values, np.ndarray) else list(values)
    xs = [np.asarray(p, dtype=np.float32).astype(np.float64) for p in parts]
    x = xs[0]
    changes = np.concatenate([np.abs(np.diff(p, axis=0)) for p in xs])
    n = rolling - 1
    moving = n // 2
    out = np.zeros(x.shape[1], dtype=np.float64)
    for j in range(x.shape[1]):
        moves = changes[:, j][changes[:, j] > 0]
        if moves.size:
            window = np.zeros((n, 1))
            window[:moving, 0] = float(np.median(moves))
            out[j] = float(change_roughness(window, trim, axis=0)[0])
    return out


def longest_runs(values: NDArray[np.floating]) -> NDArray[np.int64]:
    """Per sensor: the longest run of one exact value in a (steps, sensors) series."""
    x = np.asarray(values, dtype=np.float32)
    out = np.ones(x.shape[1], dtype=np.int64)
    for c in range(x.shape[1]):
        change = np.flatnonzero(np.diff(x[:, c]) != 0)
        edges = np.concatenate(([-1], change, [len(x) - 1]))
        out[c] = int(np.diff(edges).max()) if len(x) else 0
    return out
