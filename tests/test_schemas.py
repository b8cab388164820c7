"""The JSON Schemas published for subscribers are the ones the code validates against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.pipeline.alarm_state import alarm_list_json_schema
from edge_agent.pipeline.alerts import alert_json_schema, scores_json_schema
from edge_agent.pipeline.commands import command_json_schema, reply_json_schema

SCHEMAS = Path(__file__).resolve().parents[1] / "edge_agent" / "schemas"


@pytest.mark.parametrize(
    ("file", "schema"),
    [
        ("alert.schema.json", alert_json_schema),
        ("scores.schema.json", scores_json_schema),
        ("alarm_command.schema.json", command_json_schema),
        ("alarm_reply.schema.json", reply_json_schema),
        ("alarm_list.schema.json", alarm_list_json_schema),
    ],
)
def test_committed_schema_is_current(file: str, schema: object) -> None:
    committed = json.loads((SCHEMAS / file).read_text(encoding="utf-8"))
    assert committed == schema(), f"{file} is stale: regenerate it from edge_agent.pipeline.alerts"  # type: ignore[operator]
