"""Detection metrics on labelled series: per point, per event and per day of operation.

Point metrics (F1, FAR, MAR) are what benchmarks such as SKAB publish; operators care
more about whether each fault was caught, how late, and how many false alarms a shift
sees — so those are computed too. Inputs are aligned 1-D arrays of 0/1 labels and
boolean flags for consecutive steps. A ratio whose denominator is zero is ``None``
(JSON ``null``), never NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

SECONDS_PER_DAY = 86400.0


def _as_bool(a: NDArray[Any] | list[int] | list[bool], name: str) -> NDArray[np.bool_]:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr.astype(bool)


def _aligned(
    labels: NDArray[Any] | list[int], flags: NDArray[Any] | list[bool] | list[int]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    y = _as_bool(labels, "labels")
    f = _as_bool(flags, "flags")
    if y.shape != f.shape:
        raise ValueError(f"labels {y.shape} and flags {f.shape} differ in length")
    return y, f


def _ratio(num: float, den: float, scale: float = 1.0) -> float | None:
    return None if den == 0 else scale * num / den


def runs(mask: NDArray[Any] | list[int] | list[bool]) -> list[tuple[int, int]]:
    """``[start, stop)`` of every contiguous run of true values, in order."""
    m = _as_bool(mask, "mask")
    if not m.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], m.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def point_metrics(
    labels: NDArray[Any] | list[int], flags: NDArray[Any] | list[bool] | list[int]
) -> dict[str, Any]:
    """Confusion counts, precision, recall, F1, FAR (% of normal points flagged) and
    MAR (% of anomalous points missed)."""
    y, f = _aligned(labels, flags)
    tp = int(np.sum(y & f))
    fp = int(np.sum(~y & f))
    fn = int(np.sum(y & ~f))
    tn = int(np.sum(~y & ~f))
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        # 2TP/(2TP+FP+FN) equals the harmonic mean and is 0 (not undefined) when TP = 0
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "far_percent": _ratio(fp, fp + tn, 100.0),
        "mar_percent": _ratio(fn, fn + tp, 100.0),
    }


def event_metrics(
    labels: NDArray[Any] | list[int],
    flags: NDArray[Any] | list[bool] | list[int],
    step_seconds: float,
) -> dict[str, Any]:
    """Events are runs of label 1; one is detected when any of its points is flagged.

    The delay of a detected event is the number of steps from its first point to its
    first flagged point; the mean is over detected events only.
    """
    y, f = _aligned(labels, flags)
    events = runs(y)
    delays: list[int] = []
    for start, stop in events:
        hit = np.flatnonzero(f[start:stop])
        if hit.size:
            delays.append(int(hit[0]))
    mean_steps = float(np.mean(delays)) if delays else None
    return {
        "events": len(events),
        "events_detected": len(delays),
        "event_recall": _ratio(len(delays), len(events)),
        "mean_detection_delay_steps": mean_steps,
        "mean_detection_delay_seconds": None if mean_steps is None else mean_steps * step_seconds,
    }


def false_alarm_episodes(
    labels: NDArray[Any] | list[int], flags: NDArray[Any] | list[bool] | list[int]
) -> int:
    """Runs of flagged points that start outside every event (an operator sees each once)."""
    y, f = _aligned(labels, flags)
    return sum(1 for start, _ in runs(f) if not y[start])


def false_alarms_per_day(
    labels: NDArray[Any] | list[int],
    flags: NDArray[Any] | list[bool] | list[int],
    step_seconds: float,
) -> float | None:
    """False-alarm episodes per 86 400 s of data (all of it, normal or not)."""
    y, _ = _aligned(labels, flags)
    days = y.size * step_seconds / SECONDS_PER_DAY
    return _ratio(false_alarm_episodes(labels, flags), days)


def settled_far_percent(
    labels: NDArray[Any] | list[int],
    flags: NDArray[Any] | list[bool] | list[int],
    settle_steps: int,
) -> float | None:
    """FAR over normal points that are not among the ``settle_steps`` right after an event.

    A detector that judges a step from the last ``window`` steps still sees a fault for
    ``window - 1`` steps after it ends; flags there are labelled false but are not what an
    operator would call a false alarm. This FAR leaves them out.
    """
    y, f = _aligned(labels, flags)
    settling = np.zeros_like(y)
    for _, stop in runs(y):
        settling[stop : stop + settle_steps] = True
    clean = ~y & ~settling
    return _ratio(int(np.sum(clean & f)), int(np.sum(clean)), 100.0)


def detection_metrics(
    labels: NDArray[Any] | list[int],
    flags: NDArray[Any] | list[bool] | list[int],
    step_seconds: float,
    settle_steps: int = 0,
) -> dict[str, Any]:
    """Every metric above for one detector, as one flat JSON-ready dict.

    ``settle_steps`` (window - 1 for windowed detectors) adds ``far_settled_percent``.
    """
    y, _ = _aligned(labels, flags)
    out = point_metrics(labels, flags)
    out["far_settled_percent"] = settled_far_percent(labels, flags, settle_steps)
    out.update(event_metrics(labels, flags, step_seconds))
    out["false_alarm_episodes"] = false_alarm_episodes(labels, flags)
    out["false_alarms_per_day"] = false_alarms_per_day(labels, flags, step_seconds)
    out["points"] = int(y.size)
    out["anomalous_points"] = int(y.sum())
    return out
