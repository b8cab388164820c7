"""Models page lookup: manifests found by version under model_dirs; broken ones skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("nicegui")

from edge_console.web.models_page import find_manifests, trace_text
from harness import REPO


def test_manifests_by_version(tmp_path: Path) -> None:
    shipped = json.loads((REPO / "models" / "manifest.json").read_text())["model_set_version"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"model_set_version": "v2"}))
    found = find_manifests([REPO / "models", tmp_path, tmp_path / "missing"])
    assert set(found) == {shipped, "v2"}
    folder, doc = found[shipped]
    assert folder == REPO / "models" and doc["models"]["iforest"]["threshold"] > 0
    assert found["v2"][0] == tmp_path / "other"


def test_trace_from_the_agent_status() -> None:
    assert trace_text(None) is None
    assert trace_text({"version": "v1", "run_id": None}) is None
    assert trace_text({"run_id": "abc", "registered_model": "m", "registered_version": 3}) == (
        "training run abc · registered as m version 3"
    )


def test_training_warnings_from_the_status_or_the_manifest() -> None:
    from edge_console.state import AgentView
    from edge_console.web.models_page import manifest_warnings

    agent = AgentView("p1", "a1")
    assert agent.training_warnings == []  # no status yet
    agent.raw = {"model_set": {"version": "v1", "run_id": None}}  # an older agent's status
    assert agent.training_warnings == []
    agent.raw = {"model_set": {"version": "v1", "training_warnings": "not a list"}}
    assert agent.training_warnings == []
    agent.raw = {"model_set": {"version": "v1", "training_warnings": ["short fit part"]}}
    assert agent.training_warnings == ["short fit part"]
    assert manifest_warnings(None) == []
    assert manifest_warnings((Path("."), {"metrics": {}})) == []
    assert manifest_warnings((Path("."), {"metrics": {"warnings": ["w1", "w2"]}})) == ["w1", "w2"]
