"""Scoring through onnxruntime (the agent's own code) and the detection metrics of a run:
point decisions and alarm episodes, on the out-of-sample fit part and the evaluated steps."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import AlarmSettings
from edge_agent.pipeline.ensemble import Votes, vote
from edge_agent.pipeline.manifest import (
    ModelEntry,
    VotingEntry,
)
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.windows import sliding_windows

from .alarm_eval import alarm_states
from .clock import Clock
from .config import TrainConfig
from .data import DataError, Dataset, load_csv
from .metrics import detection_metrics

# --- scoring through onnxruntime -------------------------------------------------------------


@dataclass
class ScoredSteps:
    """Scores of steps of a dataset (consecutive but across long gaps), each from the window
    ending at that step."""

    steps: NDArray[np.int64]
    timestamps: NDArray[np.float64]
    values: NDArray[np.float64]
    labels: NDArray[np.int8] | None
    scores: dict[str, NDArray[np.float64]]
    per_sensor: NDArray[np.float32] | None
    seconds: float

    def __len__(self) -> int:
        return len(self.steps)

    def votes(self, models: dict[str, ModelEntry], voting: VotingEntry) -> Votes:
        return vote(self.scores, models, voting)


def score_steps(
    model_set: ModelSet, data: Dataset, steps: slice, batch_size: int = 2048
) -> ScoredSteps:
    """Score every step in ``steps`` that has a full window of history (in the whole dataset)
    touching no long gap (:meth:`training.data.Dataset.window_ends`).

    Earlier steps of the dataset serve as context: the first test step is scored from a
    window reaching back into the validation part, exactly as the live agent would; after a
    long gap, as in the agent, scoring resumes once a whole window of readings is in.
    """
    window = model_set.window
    idx = data.window_ends(window, steps)
    first = int(idx[0]) - window + 1 if len(idx) else 0
    stop = int(idx[-1]) + 1 if len(idx) else 0
    windows = sliding_windows(data.values[first:stop], window)  # row i ends at first+i+w-1
    rows = idx - (first + window - 1)
    scores: dict[str, list[NDArray[np.float64]]] = {k: [] for k in model_set.manifest.models}
    per_sensor: list[NDArray[np.float32]] = []
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch_size):
        batch = model_set.score(np.ascontiguousarray(windows[rows[i : i + batch_size]]))
        for key, s in batch.scores.items():
            scores[key].append(s)
        if batch.per_sensor is not None:
            per_sensor.append(batch.per_sensor)
    return ScoredSteps(
        steps=idx,
        timestamps=data.timestamps[idx],
        values=data.values[idx],
        labels=None if data.labels is None else data.labels[idx],
        scores={k: np.concatenate(v) if v else np.empty(0, np.float64) for k, v in scores.items()},
        per_sensor=np.concatenate(per_sensor) if per_sensor else None,
        seconds=time.perf_counter() - t0,
    )


def evaluate_scored(
    scored: ScoredSteps,
    models: dict[str, ModelEntry],
    voting: VotingEntry,
    step_seconds: float,
    settle_steps: int = 0,
    alarm: AlarmSettings | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Detection metrics per model and for the ensemble (labels required), as point
    decisions (``point``) and as alarm states after the on/off delays (``alarm``).

    ``settle_steps`` is normally window - 1: see :func:`training.metrics.settled_far_percent`.
    """
    if scored.labels is None:
        raise DataError("metrics need labels; this data has no label column")
    votes = scored.votes(models, voting)
    flags = {**votes.decisions, "ensemble": votes.ensemble_decision}
    return {
        "point": {
            key: detection_metrics(scored.labels, d, step_seconds, settle_steps)
            for key, d in flags.items()
        },
        "alarm": {
            key: detection_metrics(
                scored.labels,
                alarm_states(d, scored.timestamps, alarm),
                step_seconds,
                settle_steps,
            )
            for key, d in flags.items()
        },
    }


# --- helpers ---------------------------------------------------------------------------------


#: Stated false alarms per sensor per day of the health limits when the config states no
#: alarm rate (a health limit needs one: a point rate would flag healthy sensors daily).


def evaluation_data(cfg: TrainConfig, data: Dataset) -> Dataset | None:
    if cfg.eval_data is None:
        return None
    spec = cfg.data.spec().with_overrides(sensors=tuple(data.sensors))
    evaluation = load_csv(cfg.eval_data, spec)
    if evaluation.step_seconds != data.step_seconds:
        raise DataError(
            f"{evaluation.source}: step {evaluation.step_seconds:g}s differs from the "
            f"training data's {data.step_seconds:g}s"
        )
    return evaluation


def evaluate(
    cfg: TrainConfig,
    entries: dict[str, ModelEntry],
    voting: VotingEntry,
    scored: ScoredSteps | None,
    cal: ScoredSteps,
    step_seconds: float,
    clock: Clock,
) -> dict[str, Any]:
    """Out-of-sample behaviour on the fit part (always), and detection metrics on the
    evaluated steps when they have labels."""
    cal_votes = cal.votes(entries, voting)
    days = len(cal) * step_seconds / 86400
    alarms = alarm_states(cal_votes.ensemble_decision, cal.timestamps)
    episodes = int(np.sum(np.diff(np.concatenate(([0], alarms.astype(np.int8)))) == 1))
    out: dict[str, Any] = {
        "out_of_sample": {
            "steps": len(cal),
            "flagged_percent": {
                **{k: 100 * float(d.mean()) for k, d in cal_votes.decisions.items()},
                "ensemble": 100 * float(cal_votes.ensemble_decision.mean()),
            },
            "alarm_episodes": episodes,
            "alarm_episodes_per_day": episodes / days if days > 0 else None,
        }
    }
    clock.say(
        f"out of sample (fit part, {len(cal)} steps): ensemble flags "
        f"{out['out_of_sample']['flagged_percent']['ensemble']:.2f}% of steps, "
        f"{episodes} alarm episodes"
    )
    if scored is None:
        return out
    if scored.labels is None:
        votes = scored.votes(entries, voting)
        flagged = {k: 100 * float(d.mean()) for k, d in votes.decisions.items()}
        flagged["ensemble"] = 100 * float(votes.ensemble_decision.mean())
        out["test"] = {"flagged_percent": flagged}
        return out
    result = evaluate_scored(scored, entries, voting, step_seconds, cfg.window - 1)
    out["test"], out["test_alarm"] = result["point"], result["alarm"]
    for level, table in (("point", result["point"]), ("alarm", result["alarm"])):
        for key, m in table.items():
            clock.say(
                f"test {level:5s} {key:8s} F1 {fmt(m['f1'])}  FAR {fmt(m['far_percent'])}% "
                f"MAR {fmt(m['mar_percent'])}%  events {m['events_detected']}/{m['events']}  "
                f"delay {fmt(m['mean_detection_delay_seconds'], 1)}s  "
                f"false alarms/day {fmt(m['false_alarms_per_day'], 1)}"
            )
    return out


def fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"
