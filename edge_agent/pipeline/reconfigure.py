"""Which settings a reload (SIGHUP) can change, and the diff of two settings objects.

The running engine's buffers, alarm states and MQTT session are built on most settings, so
only the ``models`` section is reloadable. :meth:`Engine.reconfigure` applies these keys and
refuses every other changed key with :data:`RESTART_REASON`, so no change is silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_agent.config import AgentSettings

#: Keys applied by a reload. All but ``stride`` reach the engine through the new model set
#: (they decide where and how it is loaded); ``stride`` is applied by the engine itself.
RELOADABLE_KEYS = frozenset(
    {
        "models.dir",
        "models.expected_sensors",
        "models.threads",
        "models.batch_threads",
        "models.enable_cpu_mem_arena",
        "models.stride",
    }
)
RESTART_REASON = "takes effect on restart (the running state is built on it)"


@dataclass
class ReloadReport:
    """What a reload changed: applied keys, and refused keys with the reason."""

    applied: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def changed_keys(old: AgentSettings, new: AgentSettings) -> list[str]:
    """Dotted names of the leaf settings that differ (``models.stride``, ``mqtt.host``)."""
    out: list[str] = []
    _diff(old.model_dump(), new.model_dump(), "", out)
    return sorted(out)


def _diff(old: Any, new: Any, prefix: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            _diff(old.get(key), new.get(key), name, out)
    elif old != new:
        out.append(prefix)
