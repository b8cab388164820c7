"""What one tick produces, and the scoring job handed between the engine and the models.

A tick is three stages (:class:`~edge_agent.pipeline.engine.Engine`): ``prepare`` closes due
steps and collects the windows to score into a :class:`ScoreJob`; :func:`run_models` scores
them; ``finish`` applies the scores and runs the alarms. ``run_models`` reads nothing but the
job, so the daemon can run it in a worker thread (onnxruntime releases the GIL) while the
event loop goes on taking messages; replay and the tests run all three in one call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.alerts import Alert, EnvelopeExcursion, ModelVerdict, SensorError
from edge_agent.pipeline.align import ClosedStep
from edge_agent.pipeline.scoring import BatchScores, ModelSet
from edge_agent.pipeline.sensor_health import SensorHealth

#: Most windows scored in one onnxruntime call. The cost per window is flat from ~16
#: windows up, while the buffers of one call grow with its windows: the LSTM's are ~6 MB
#: at 32 windows. Small parts bound what onnxruntime's arena (``models.enable_cpu_mem_arena``)
#: keeps to a part per thread (measured: +12 MB of RSS at 32, +23 MB at 64, two threads).
MAX_SCORE_BATCH = 32
#: A batch is split over the model set's ``parallel`` threads only into parts of at least
#: this many windows (a chosen floor, not tuned: a part of 16 costs ~3 ms, well above the
#: hand-off between threads).
MIN_PARALLEL_WINDOWS = 16

#: ``map``-like: runs ``score`` on each part (perhaps on several threads), results in order.
MapParts = Callable[
    [Callable[[NDArray[np.float32]], BatchScores], list[NDArray[np.float32]]],
    Iterable[BatchScores],
]


def batch_slices(n: int, parallel: int = 1) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` parts of ``n`` windows, near-equal, each at most
    :data:`MAX_SCORE_BATCH`; a multiple of ``parallel`` of them when every part still gets
    :data:`MIN_PARALLEL_WINDOWS`, so a burst of 125 windows is four parts on two cores.
    Scores do not depend on how a batch is cut (every window is scored on its own rows)."""
    if n <= 0:
        return []
    k = -(-n // MAX_SCORE_BATCH)
    p = min(parallel, n // MIN_PARALLEL_WINDOWS)
    if p > 1:
        k = -(-k // p) * p
    bounds = [i * n // k for i in range(k + 1)]
    return list(itertools.pairwise(bounds))


@dataclass(slots=True)
class StepOutcome:
    """What happened at one closed step of one unit."""

    unit: str
    #: Start of the step, Unix seconds.
    ts: float
    index: int
    #: How the step closed: ``complete``, ``deadline`` or ``overflow``.
    how: str
    #: Why the step was not scored: ``warmup`` (window not full yet), ``stride`` or
    #: ``stale``; None when it was scored.
    not_scored: Literal["warmup", "stride", "stale"] | None
    stale_sensors: tuple[str, ...] = ()
    carried: tuple[str, ...] = ()
    #: Sensors whose latest reading was impossible (rejected at ingest).
    bad_sensors: tuple[str, ...] = ()
    #: Sensors whose readings are not trusted at this step, with the reason
    #: (``impossible``, ``frozen``, ``noisy``: see :mod:`edge_agent.pipeline.sensor_health`).
    quality: dict[str, str] = field(default_factory=dict)
    #: Sensors outside their training envelope at this step (scored all the same).
    outside_envelope: tuple[EnvelopeExcursion, ...] = ()
    models: dict[str, ModelVerdict] = field(default_factory=dict)
    score: float | None = None
    decision: bool | None = None
    #: How far past the threshold (see ``ensemble.Votes.strength``): the alert's severity.
    strength: float | None = None
    #: Per-sensor reconstruction error (None when not scored or no model reports one).
    sensor_error: NDArray[np.float32] | None = None
    #: Alarm kind -> active after this step.
    alarms: Mapping[str, bool] = field(default_factory=dict)
    #: Alerts published at this step (flood-suppressed ones are not here).
    alerts: list[Alert] = field(default_factory=list)
    last_received: float | None = None
    #: The newest reading's own timestamp (the source's clock).
    last_ts: float | None = None
    sensor_names: Sequence[str] = ()
    top_k: int = 3
    #: The step's values in ``sensor_names`` order (NaN = missing), for the alarm lifecycle's
    #: suppression by design.
    row: NDArray[np.float32] | None = None
    #: The model set that scored the step ('' when not scored): a reload between two
    #: batches must not relabel the scores of the earlier one.
    model_set_version: str = ""

    @property
    def top_sensors(self) -> tuple[SensorError, ...]:
        """The ``top_k`` sensors with the largest error, largest first (computed on demand:
        most steps are never looked at that closely)."""
        err = self.sensor_error
        if err is None:
            return ()
        order = np.argsort(-err, kind="stable")[: self.top_k]
        return tuple(SensorError(self.sensor_names[c], float(err[c])) for c in order)

    @property
    def scored(self) -> bool:
        return self.not_scored is None

    @property
    def stale(self) -> bool:
        return bool(self.stale_sensors)


@dataclass(slots=True)
class TickResult:
    steps: list[StepOutcome] = field(default_factory=list)
    #: Every alert to publish, in order (the steps' alerts plus flood summaries).
    alerts: list[Alert] = field(default_factory=list)


@dataclass(slots=True)
class ScoreJob:
    """The windows one tick scores, with everything scoring reads captured at ``prepare``:
    the model set (so a reload swaps sets between jobs, never inside one) and the
    sensor-health rules. ``outcomes[batch_rows[j]]`` is the step of ``windows[j]``."""

    now: float
    closed: list[ClosedStep]
    outcomes: list[StepOutcome]
    batch_rows: list[int]
    windows: NDArray[np.float32]
    model_set: ModelSet
    health: SensorHealth
    #: Filled by :func:`run_models`: one entry per part of ``windows``, in order.
    scored: list[BatchScores] = field(default_factory=list)
    #: (batch, sensors): windows whose recent readings are too rough to trust.
    noisy: NDArray[np.bool_] | None = None

    @property
    def has_windows(self) -> bool:
        return bool(self.batch_rows)


def run_models(job: ScoreJob, map_parts: MapParts | None = None) -> ScoreJob:
    """Score the job's windows in the parts :func:`batch_slices` cuts, through
    ``map_parts`` when given (the daemon's threads) or one after another. Touches only the
    job (thread-safe: onnxruntime sessions may be run from several threads at once)."""
    if job.scored or not job.batch_rows:
        return job
    parallel = job.model_set.parallel if map_parts is not None else 1
    parts = [job.windows[a:b] for a, b in batch_slices(len(job.batch_rows), parallel)]
    score = job.model_set.score
    if map_parts is not None and len(parts) > 1:
        job.scored = list(map_parts(score, parts))
    else:
        job.scored = [score(part) for part in parts]
    if job.health.enabled:
        job.noisy = job.health.noisy(job.windows)
    return job
