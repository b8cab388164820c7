"""Timing benchmarked callables: per-call wall-clock and CPU statistics, percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Timing:
    """Per-call times of one benchmarked callable, in milliseconds.

    ``cpu_*`` is the process CPU time of the call (all threads): on a shared machine the
    wall clock also counts the time spent waiting for a core, the CPU time does not, so it
    is the better estimate of the cost on a core of one's own. Both are reported.
    """

    calls: int
    median_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    cpu_median_ms: float
    cpu_mean_ms: float

    def to_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "median_ms": self.median_ms,
            "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms,
            "min_ms": self.min_ms,
            "cpu_median_ms": self.cpu_median_ms,
            "cpu_mean_ms": self.cpu_mean_ms,
        }


def time_calls(
    fn: Callable[[], Any],
    *,
    seconds: float = 1.0,
    min_calls: int = 5,
    max_calls: int = 100_000,
    warmup: int = 3,
) -> Timing:
    """Call ``fn`` for about ``seconds`` (at least ``min_calls`` times); per-call statistics."""
    for _ in range(warmup):
        fn()
    wall: list[float] = []
    cpu: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(wall) < max_calls and (len(wall) < min_calls or time.perf_counter() < deadline):
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        fn()
        wall.append((time.perf_counter_ns() - t0) / 1e6)
        cpu.append((time.process_time_ns() - c0) / 1e6)
    wall.sort()
    return Timing(
        calls=len(wall),
        median_ms=statistics.median(wall),
        p99_ms=wall[min(len(wall) - 1, int(0.99 * len(wall)))],
        mean_ms=statistics.fmean(wall),
        min_ms=wall[0],
        cpu_median_ms=statistics.median(cpu),
        cpu_mean_ms=statistics.fmean(cpu),
    )


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]
