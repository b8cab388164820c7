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
