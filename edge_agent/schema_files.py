"""The committed JSON Schemas (``edge_agent/schemas/*.json``), written from the code.

Each file is generated from the definition the agent itself uses (the alert and scores
dataclasses, the alarm command models, the manifest model, ...), so a subscriber's schema can
never drift from what is sent: ``edge-agent schema`` rewrites them, ``edge-agent schema
--check`` (and ``tests/test_schemas.py``) fails while one is stale. One text format for all:
sorted keys, 2-space indent, ASCII, final newline (the manifest's, as ``python -m training
schema`` writes it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edge_agent.pipeline.alarm_state import alarm_list_json_schema
from edge_agent.pipeline.alerts import alert_json_schema, scores_json_schema
from edge_agent.pipeline.commands import command_json_schema, reply_json_schema
from edge_agent.pipeline.manifest import manifest_json_schema

#: Where the committed copies live (inside the package: they ship with it).
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

#: File name -> the function that builds its schema.
SCHEMAS: Mapping[str, Callable[[], Mapping[str, Any]]] = {
    "alert.schema.json": alert_json_schema,
    "scores.schema.json": scores_json_schema,
    "alarm_command.schema.json": command_json_schema,
    "alarm_reply.schema.json": reply_json_schema,
    "alarm_list.schema.json": alarm_list_json_schema,
    "manifest.schema.json": manifest_json_schema,
}


def schema_text(name: str) -> str:
    """The file ``name`` exactly as it must be committed."""
    return json.dumps(SCHEMAS[name](), indent=2, sort_keys=True) + "\n"


def stale_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the files in ``directory`` that are missing or differ from the code."""
    stale = []
    for name in SCHEMAS:
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != schema_text(name):
            stale.append(name)
    return stale


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """(Re)write every schema file into ``directory``; returns the files that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name in stale_schemas(directory):
        path = directory / name
        path.write_text(schema_text(name), encoding="utf-8")
        changed.append(path)
    return changed
