"""Loading the configured model set: one function shared by the daemon, the CLI and replay.

It lives outside the daemon because ``edge-agent check``/``replay`` and the benchmarks load a
model set without running a server.
"""

from __future__ import annotations

import os

from edge_agent.config import AgentSettings
from edge_agent.pipeline.manifest import MANIFEST_NAME, ManifestError
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
    return ModelSet.load(
        settings.models.dir,
        expected_sensors=list(expected) if expected else None,
        threads=settings.models.threads,
        batch_threads=settings.models.batch_threads or auto_batch_threads(),
        mem_arena=settings.models.enable_cpu_mem_arena,
    )
