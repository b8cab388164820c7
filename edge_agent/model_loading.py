"""Loading the configured model set: one function shared by the daemon, the CLI and replay.

It lives outside the daemon because ``edge-agent check``/``replay`` and the benchmarks load a
model set without running a server.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edge_agent.config import AgentSettings
from edge_agent.pipeline.manifest import MANIFEST_NAME, ManifestError
from edge_agent.pipeline.outcome import MAX_SCORE_BATCH
from edge_agent.pipeline.scoring import ModelSet

#: ``models.batch_threads: 0`` uses the usable CPUs up to this many (past it, the parts
#: of a 125-window batch get too small to pay for their hand-off).
AUTO_BATCH_THREADS_MAX = 4


def auto_batch_threads() -> int:
    """The CPUs this process may run on (its affinity, as systemd's CPUAffinity= sets it),
    at most :data:`AUTO_BATCH_THREADS_MAX`."""
    return max(1, min(AUTO_BATCH_THREADS_MAX, len(os.sched_getaffinity(0))))


def load_model_set(settings: AgentSettings, pinned_sensors: list[str] | None) -> ModelSet:
    """Load and verify the configured model set (checksums, sensors, ONNX I/O shapes)."""
    manifest = (settings.models.dir / MANIFEST_NAME).absolute()
    if not manifest.is_file():
        raise ManifestError(
            f"config key models.dir: no model set at {manifest.parent} ({manifest} not found)"
        )
    expected = settings.models.expected_sensors or pinned_sensors
    model_set = ModelSet.load(
        settings.models.dir,
        expected_sensors=list(expected) if expected else None,
        threads=settings.models.threads,
        batch_threads=settings.models.batch_threads or auto_batch_threads(),
        mem_arena=settings.models.enable_cpu_mem_arena,
    )
    warm_up(model_set)
    return model_set


def warm_up(model_set: ModelSet) -> None:
    """Score the largest part on every part thread at once, before the set is used.

    onnxruntime's arena grows to the largest calls it has served at once and keeps that, so
    it reaches its bound here (RSS after start includes it and stays flat at load), and the
    first burst of the plant does not pay for mapping the buffers.
    """
    shape = (MAX_SCORE_BATCH, model_set.window, len(model_set.manifest.sensors))
    windows = np.zeros(shape, dtype=np.float32)
    if model_set.parallel <= 1:
        model_set.score(windows)
        return
    with ThreadPoolExecutor(model_set.parallel, thread_name_prefix="warm-up") as pool:
        list(pool.map(model_set.score, [windows] * model_set.parallel))
