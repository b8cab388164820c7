"""The retained status message (edge_agent/daemon/mqtt/status.py)."""

from __future__ import annotations

import json
import os

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import status_payload, status_topic


def test_status_payload_fields() -> None:
    settings = AgentSettings(plant="p1", agent_id="a9", units=[{"name": "u1"}])
    body = json.loads(status_payload("online", settings, "ms-42"))
    assert body["state"] == "online"
    assert (body["agent_id"], body["plant"], body["pid"]) == ("a9", "p1", os.getpid())
    assert body["versions"]["model_set"] == "ms-42"
    assert body["versions"]["edge_agent"]
    assert body["ts"].endswith("Z")


def test_status_payload_carries_the_model_trace() -> None:
    settings = AgentSettings(plant="p1", agent_id="a9", units=[{"name": "u1"}])
    body = json.loads(status_payload("stopped", settings, "ms-1", {"run_id": "r7"}))
    assert body["state"] == "stopped"
    assert body["model_set"] == {"version": "ms-1", "run_id": "r7"}


def test_status_topic_is_filled_from_the_template() -> None:
    settings = AgentSettings(plant="p1", agent_id="a9", units=[{"name": "u1"}])
    assert status_topic(settings) == "plant/p1/edge/a9/status"
    custom = AgentSettings(
        plant="p1", agent_id="a9", units=[{"name": "u1"}], topics={"status": "s/{agent_id}"}
    )
    assert status_topic(custom) == "s/a9"
