"""The agent's retained status message: who it is, what it runs, whether it is up.

``online`` after connecting, ``stopped`` on a clean stop, and ``offline`` as the Last Will
the broker publishes when the connection dies without a DISCONNECT.
"""

from __future__ import annotations

import json
import os
import time
from functools import cache
from importlib import metadata

from edge_agent import __version__
from edge_agent.config import AgentSettings
from edge_agent.pipeline.alerts import rfc3339
from edge_agent.topics import fill

from .transport import ModelTrace, StatusState


@cache
def _onnxruntime_version() -> str | None:
    # Read from the installed metadata: importing onnxruntime just for its version is slow.
    try:
        return metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        return None


def status_topic(settings: AgentSettings) -> str:
    return fill(settings.topics.status, plant=settings.plant, agent_id=settings.agent_id)


def status_payload(
    state: StatusState,
    settings: AgentSettings,
    model_set_version: str | None,
    model_trace: ModelTrace | None = None,
) -> bytes:
    """Retained status JSON: who this agent is, what it runs, and whether it is up.

    ``model_set`` traces the running set to its training run and registry version and
    carries what training warned about it
    (:attr:`edge_agent.pipeline.manifest.Manifest.status_trace`); ``plant_info`` is the
    configured metadata.
    """
    body: dict[str, object] = {
        "state": state,
        "agent_id": settings.agent_id,
        "plant": settings.plant,
        "ts": rfc3339(time.time()),
        "versions": {
            "edge_agent": __version__,
            "model_set": model_set_version,
            "onnxruntime": _onnxruntime_version(),
        },
        "pid": os.getpid(),
        "model_set": {"version": model_set_version, **(model_trace or {})},
    }
    info = settings.plant_info.status_fields()
    if info:
        body["plant_info"] = info
    return json.dumps(body, separators=(",", ":")).encode()
