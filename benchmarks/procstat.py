"""Measuring and placing processes (Linux /proc, CPU affinity): CPU time, RSS, open fds.

Starting, stopping and pinning a process is the harness's (:mod:`harness.process`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (Linux), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_rss_mb(pid: int) -> float | None:
    """Resident set size in MiB from /proc/<pid>/statm."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * _PAGE / (1024 * 1024)


def proc_fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class CpuMeter:
    """CPU % of one process between :meth:`start` and :meth:`stop` (100 % = one core busy)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu0 = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self._cpu0 = proc_cpu_seconds(self.pid) or 0.0
        self._t0 = time.monotonic()

    def stop(self) -> float | None:
        cpu = proc_cpu_seconds(self.pid)
        elapsed = time.monotonic() - self._t0
        if cpu is None or elapsed <= 0:
            return None
        return 100.0 * (cpu - self._cpu0) / elapsed


def cpu_split(pin: bool | None = None) -> tuple[set[int] | None, set[int] | None]:
    """(agent CPUs, everything-else CPUs) when pinning: the agent alone on the last core.

    Off unless asked (``pin`` or ``EDGE_BENCH_PIN=1``): pinning only isolates the agent when
    nothing else runs on the machine; on a shared machine it can trap the agent on a busy
    core. Unpinned, a single-threaded agent still cannot use more than one core; its CPU %
    (100 % = one core) is reported either way.
    """
    if pin is None:
        pin = os.environ.get("EDGE_BENCH_PIN", "") not in ("", "0")
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])
