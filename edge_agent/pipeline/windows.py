"""Windows of consecutive steps: a ring buffer for the live agent, sliding views for training."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def sliding_windows(series: NDArray[np.floating[Any]], window: int) -> NDArray[np.float32]:
    """All (n - window + 1) windows of a (n, sensors) series as (count, window, sensors).

    Returns a read-only view (no copy) when the input is already float32. Window i ends
    at step ``i + window - 1``.
    """
    x = np.asarray(series, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"series must be 2-D (steps, sensors), got {x.shape}")
    if x.shape[0] < window:
        return np.empty((0, window, x.shape[1]), dtype=np.float32)
    view: NDArray[np.float32] = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)
    return view.transpose(0, 2, 1)


class RingBuffer:
    """The last ``window`` rows of a (steps, sensors) stream with O(1) append.

    Each row is written twice, at ``i`` and ``i + window`` of a buffer twice as long, so
    the current window is always one contiguous slice: reading it needs no Python loop,
    no concatenation and no copy.
    """

    __slots__ = ("_buf", "_count", "_pos", "window")

    def __init__(self, window: int, n_sensors: int) -> None:
        if window < 1 or n_sensors < 1:
            raise ValueError("window and n_sensors must be positive")
        self.window = window
        self._buf = np.zeros((2 * window, n_sensors), dtype=np.float32)
        self._pos = 0
        self._count = 0

    def append(self, row: NDArray[np.floating[Any]] | list[float]) -> None:
        self._buf[self._pos] = row
        self._buf[self._pos + self.window] = row
        self._pos = (self._pos + 1) % self.window
        self._count += 1

    @property
    def full(self) -> bool:
        return self._count >= self.window

    @property
    def count(self) -> int:
        """Rows appended since creation or the last clear (not capped at window)."""
        return self._count

    def view(self) -> NDArray[np.float32]:
        """The last ``window`` rows, oldest first, as a read-only view (valid until next append)."""
        v = self._buf[self._pos : self._pos + self.window]
        v.flags.writeable = False
        return v

    def last(self) -> NDArray[np.float32]:
        row: NDArray[np.float32] = self._buf[(self._pos - 1) % self.window]
        return row

    def clear(self) -> None:
        self._count = 0
        self._pos = 0
