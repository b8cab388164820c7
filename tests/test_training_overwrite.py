"""`edge-train` never replaces a model set (such as the shipped, committed models/) unless
asked with --force, and `edge-train schema` does not write into the package by default."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from handmade_models import build_model_set

from training.cli import main

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "edge_agent" / "schemas" / "manifest.schema.json"


def digest(directory: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(directory.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_train_refuses_to_overwrite_a_model_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = build_model_set(tmp_path / "models", window=20, version="keep-me")
    before = digest(existing)
    data = tmp_path / "sim.csv"
    data.write_text("timestamp,a\n0,1\n", encoding="utf-8")
    code = main(["train", "--data", str(data), "--out", str(existing)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"edge-train: error: {existing} already holds model set keep-me; pass --force to "
        "replace it, or --out a new directory (e.g. --out runs/models)"
    )
    assert digest(existing) == before


def test_the_default_output_dir_is_protected_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --out, train writes to output_dir (models): in a checkout, the shipped set."""
    shutil.copytree(REPO / "models", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    config = REPO / "config" / "training.yaml"
    assert main(["train", "--config", str(config), "--data", "whatever.csv"]) == 2
    assert "already holds model set" in capsys.readouterr().err


def test_force_goes_past_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = build_model_set(tmp_path / "models", window=20)
    code = main(["train", "--data", str(tmp_path / "none.csv"), "--out", str(existing), "--force"])
    assert code == 2
    err = capsys.readouterr().err
    assert "already holds" not in err and "none.csv" in err  # failed later, on the data


def test_schema_prints_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    before = SCHEMA.stat().st_mtime_ns
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == SCHEMA.read_text(encoding="utf-8")
    assert SCHEMA.stat().st_mtime_ns == before


def test_schema_out_writes_the_file(tmp_path: Path) -> None:
    assert main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    assert (tmp_path / "s.json").read_text(encoding="utf-8") == SCHEMA.read_text(encoding="utf-8")
