"""Judge what operators see: decisions through the agent's own alarm state machine.

An operator never sees a point decision; they see an alarm raised after ``on_delay``
anomalous steps and held until ``off_delay`` normal ones. Evaluation runs the decisions
through :class:`edge_agent.pipeline.alarm.AlarmBook` (the agent's code, not a copy) and reports the
alarm state per step beside the point decisions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import AlarmSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alarm import AlarmBook


def alarm_states(
    decisions: NDArray[Any], timestamps: NDArray[Any], settings: AlarmSettings | None = None
) -> NDArray[np.bool_]:
    """Whether the unit's anomaly alarm is active after each step (flood guard aside: a
    held-back alarm is still an active alarm)."""
    book = AlarmBook(settings or AlarmSettings(), "evaluation", Metrics())
    out = np.zeros(len(decisions), dtype=bool)
    for i, (d, ts) in enumerate(zip(np.asarray(decisions, dtype=bool), timestamps, strict=True)):
        book.update("u", "anomaly", "", bool(d), float(ts))
        out[i] = book.is_active("u", "anomaly")
    return out
