"""The committed manifest JSON Schema: current, meaningful, and satisfied by the shipped set.

(A manifest written by ``edge-train train`` is checked against it in test_training_cli.py,
which has a trained model set at hand.)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge_agent.pipeline.features import default_feature_spec
from edge_agent.pipeline.manifest import Manifest, load_manifest, manifest_json_schema
from training.cli import schema_text

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "edge_agent" / "schemas" / "manifest.schema.json"
SHIPPED_MODELS = REPO / "models"


def committed_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


def minimal_manifest() -> dict[str, Any]:
    spec = default_feature_spec(["a", "b"], rolling=5)
    return {
        "format_version": 1,
        "model_set_version": "20260101-0123abcd",
        "created_at": "2026-01-01T00:00:00Z",
        "training_data_sha256": "0" * 64,
        "sensors": [
            {"name": "a", "lo": 0, "hi": 1},
            {"name": "b", "unit": "bar", "lo": 0, "hi": 9},
        ],
        "window": 10,
        "step_seconds": 1.0,
        "features": spec.to_dict(),
        "models": {
            "iforest": {
                "kind": "iforest",
                "file": "iforest.onnx",
                "sha256": "a" * 64,
                "input_name": "X",
                "input_kind": "features",
                "input_shape": [None, spec.n_features],
                "score_output": "scores",
                "score_sign": -1,
                "threshold": 0.1,
                "score_scale": 0.05,
            }
        },
        "voting": {"strategy": "weighted", "weights": {"iforest": 1.0}, "threshold": 0.5},
    }


def test_committed_schema_is_the_generated_one() -> None:
    assert committed_schema() == manifest_json_schema(), (
        "edge_agent/schemas/manifest.schema.json is stale: run `python -m training schema`"
    )
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text()


def test_schema_accepts_a_valid_manifest_and_rejects_broken_ones() -> None:
    schema = committed_schema()
    good = minimal_manifest()
    Manifest.model_validate(good)  # the pydantic model agrees it is valid
    jsonschema.validate(good, schema)
    broken: list[tuple[str, Any]] = [
        ("models.iforest.sha256", "not-a-digest"),
        ("models.iforest.score_scale", 0),
        ("models.iforest.kind", "autoencoder"),
        ("window", 1),
        ("voting.threshold", 1.5),
        ("surprise", True),  # extra keys are refused, like the agent does
    ]
    for dotted, value in broken:
        bad = copy.deepcopy(good)
        node = bad
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_shipped_model_set_matches_the_schema_and_loads() -> None:
    manifest_file = SHIPPED_MODELS / "manifest.json"
    if not manifest_file.is_file():
        pytest.skip("models/manifest.json is not shipped yet (make models creates it)")
    jsonschema.validate(json.loads(manifest_file.read_text(encoding="utf-8")), committed_schema())
    manifest = load_manifest(SHIPPED_MODELS)
    assert set(manifest.models) == {"iforest", "lstm_ae"}
