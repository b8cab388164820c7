"""The state alignment keeps per unit: open steps, the closed-step hand-off, the timeline.

Data only; the rules that move it (when a step closes, carry-forward, staleness) are
:class:`edge_agent.pipeline.align.Aligner`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass(slots=True)
class ClosedStep:
    """One closed step of one unit, ready to be appended to its window."""

    unit: str
    index: int
    #: Start of the step, Unix seconds.
    ts: float
    #: One value per sensor (carried forward where missing); NaN where stale.
    row: NDArray[np.float32]
    #: ``complete``, ``deadline`` or ``overflow``.
    how: str
    #: Columns whose value was carried forward from an earlier step.
    carried: tuple[int, ...] = ()
    #: Columns without a value fresh enough to use; non-empty means "do not score".
    stale: tuple[int, ...] = ()
    #: Arrival (agent clock) of the step's last reading; None for a step without readings.
    last_received: float | None = None
    #: Columns whose latest reading (at or before this step) was impossible, with no valid
    #: reading since: the ``bad_quality`` alarm's input.
    bad: tuple[int, ...] = ()
    #: The newest reading's own timestamp (the source's clock); None without readings.
    last_ts: float | None = None

    @property
    def is_stale(self) -> bool:
        return bool(self.stale)


class OpenStep:
    __slots__ = ("bad", "count", "last_received", "last_ts", "values")

    def __init__(self, n: int) -> None:
        self.values: list[float | None] = [None] * n
        self.count = 0
        self.last_received = -math.inf
        self.last_ts = -math.inf
        #: Bit mask of sensors that sent an impossible reading for this step.
        self.bad = 0


@dataclass(slots=True)
class Timeline:
    """Alignment state of one unit."""

    n: int
    open: dict[int, OpenStep] = field(default_factory=dict)
    closed_upto: int | None = None
    #: Sensors (bit mask) that had a real value in recently closed steps: tells duplicates
    #: (e.g. a QoS 1 redelivery) from genuinely late readings.
    recent: dict[int, int] = field(default_factory=dict)
    last_value: list[float] = field(default_factory=list)
    last_index: list[int | None] = field(default_factory=list)
    newest_value_index: int | None = None
    empty_stale_run: int = 0
    pending: list[ClosedStep] = field(default_factory=list)
    #: Newest reading timestamp and newest arrival time, in µs: the unit's event clock.
    watermark_us: int | None = None
    last_arrival_us: int = 0
    #: Bit mask of sensors whose latest reading was impossible (until a valid one closes).
    bad: int = 0
    #: Order of first appearance: ``close_due`` returns units in this order.
    ordinal: int = 0
    #: When (agent clock, µs) ``close_due`` must next look at this unit (None: never yet).
    due_us: int | None = None

    def __post_init__(self) -> None:
        self.last_value = [math.nan] * self.n
        self.last_index = [None] * self.n

    def first_unclosed(self) -> int | None:
        if self.closed_upto is not None:
            return self.closed_upto + 1
        return min(self.open) if self.open else None
