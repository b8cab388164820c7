"""The training envelope: the range each sensor's readings had in the fit data.

A reading outside it is scored all the same (it is evidence, not bad input), but the step
says so (``StepOutcome.outside_envelope``, the alert's evidence): the models have not seen
such a value, so an operator should weigh their verdict accordingly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.alerts import EnvelopeExcursion
from edge_agent.pipeline.sensors import SensorSpec


class Envelope:
    """Per-sensor training ranges; unbounded sides (±inf) are reported as None."""

    def __init__(self, sensors: Sequence[SensorSpec]) -> None:
        self.names = [s.name for s in sensors]
        self._lo = np.array([s.envelope_lo for s in sensors], dtype=np.float32)
        self._hi = np.array([s.envelope_hi for s in sensors], dtype=np.float32)
        self._bounds = [
            (
                None if not np.isfinite(s.envelope_lo) else s.envelope_lo,
                None if not np.isfinite(s.envelope_hi) else s.envelope_hi,
            )
            for s in sensors
        ]

    def excursions(self, rows: NDArray[np.float32]) -> list[tuple[EnvelopeExcursion, ...]]:
        """Per step (row of ``rows``): sensors outside the envelope (NaN: stale, not
        outside). One array operation for a whole tick, not one per step."""
        outside = (rows < self._lo) | (rows > self._hi)
        flagged: list[bool] = np.asarray(outside.any(axis=1)).tolist()
        names = self.names
        return [
            tuple(
                EnvelopeExcursion(names[c], float(rows[i, c]), *self._bounds[c])
                for c in np.flatnonzero(outside[i])
            )
            if hit
            else ()
            for i, hit in enumerate(flagged)
        ]
