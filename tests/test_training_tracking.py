"""MLflow tracking, the model registry and the report's diagnostics, on one tiny training run
(window 20, 20 trees, 1 epoch) recorded in a temporary SQLite store."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_agent.pipeline.manifest import Manifest, load_manifest
from training.cli import main, run_train
from training.cli_args import build_parser, train_overrides
from training.config import load_config
from training.diagnostics import FIGURES as DIAG_FIGURES
from training.registry import list_versions, promote, rollback
from training.tracking import client, flat_metrics, record_run

pytestmark = pytest.mark.slow
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("tracking")
    data = root / "sim.csv"
    assert main(["generate", "--out", str(data), "--steps", "3000", "--events", "4",
                 "--units", "1"]) == 0  # fmt: skip
    uri = f"sqlite:///{root / 'store' / 'mlruns.db'}"
    argv = [
        "train", "--data", str(data), "--out", str(root / "models"),
        "--window", "20", "--trees", "20", "--epochs", "1",
        "--max-train-windows", "400", "--threads", "1",
        "--tracking-uri", uri, "--registered-model", "thermal-test",
    ]  # fmt: skip
    args = build_parser().parse_args(argv)
    printed = io.StringIO()
    with redirect_stdout(printed):
        result = run_train(args)
    cfg = load_config(None, train_overrides(args))
    return SimpleNamespace(root=root, uri=uri, result=result, cfg=cfg, out=root / "models",
                           stdout=printed.getvalue())  # fmt: skip


def _store_run(run: SimpleNamespace) -> tuple[object, object]:
    c = client(run.uri)
    manifest = load_manifest(run.out)
    assert manifest.tracking is not None
    return c, c.get_run(manifest.tracking.run_id)


def test_run_recorded_with_params_metrics_and_tags(run: SimpleNamespace) -> None:
    c, r = _store_run(run)
    p, m, tags = r.data.params, r.data.metrics, r.data.tags
    assert r.info.status == "FINISHED"
    assert p["window"] == "20" and p["iforest.n_estimators"] == "20"
    assert p["lstm_ae.epochs"] == "1" and p["tracking.registered_model"] == "thermal-test"
    assert p["data.sha256"] == run.result.data.sha256
    assert p["data.rows"] == str(run.result.data.rows_read)
    # evaluation metrics, thresholds, timings, all flattened from the metrics dict
    assert m["test.ensemble.f1"] == pytest.approx(run.result.metrics["test"]["ensemble"]["f1"])
    th = run.result.manifest.models["lstm_ae"].threshold
    assert m["thresholds.lstm_ae.threshold"] == pytest.approx(th)
    assert m["timings_seconds.fit"] > 0 and m["timings_seconds.fold_5"] > 0
    # per-epoch losses as a series, one step per epoch
    loss = c.get_metric_history(r.info.run_id, "lstm_ae.loss")
    assert [h.step for h in loss] == list(range(len(run.result.history["loss"])))
    assert [h.value for h in loss] == pytest.approx(run.result.history["loss"])
    # cross-validation and importance are in the run too
    assert "diagnostics.cv.iforest.exceed_percent_mean" in m
    assert any(k.startswith("diagnostics.importance.iforest.features.") for k in m)
    assert tags["model_set_version"] == run.result.manifest.model_set_version
    assert tags["edge_agent.version"]
    assert len(tags["git_commit"]) == 40  # the checkout is a git work tree


def test_artifacts_are_the_model_set_with_tracking_in_the_manifest(
    run: SimpleNamespace, tmp_path: Path
) -> None:
    c, r = _store_run(run)
    names = {a.path for a in c.list_artifacts(r.info.run_id, "model_set")}
    assert {"model_set/iforest.onnx", "model_set/lstm_ae.onnx", "model_set/manifest.json"} <= names
    report = {a.path for a in c.list_artifacts(r.info.run_id, "model_set/report")}
    assert "model_set/report/report.md" in report
    got = Path(c.download_artifacts(r.info.run_id, "model_set", str(tmp_path)))
    stored = load_manifest(got)  # checksums of the stored ONNX files match
    assert stored == load_manifest(run.out)
    assert stored.tracking is not None
    assert stored.tracking.run_id == r.info.run_id
    assert stored.tracking.registered_model == "thermal-test"
    assert stored.tracking.registered_version == 1


def test_manifest_without_tracking_still_loads(run: SimpleNamespace, tmp_path: Path) -> None:
    shutil.copytree(run.out, tmp_path / "old")
    path = tmp_path / "old" / "manifest.json"
    raw = json.loads(path.read_text())
    del raw["tracking"]
    path.write_text(json.dumps(raw))
    assert load_manifest(tmp_path / "old").tracking is None


def test_registry_promote_and_rollback(run: SimpleNamespace, tmp_path: Path) -> None:
    c = client(run.uri)
    # a second registered version: record the same set again from a copy of the output
    copy = tmp_path / "models-copy"
    shutil.copytree(run.out, copy)
    second = record_run(run.cfg, dataclasses.replace(run.result, out_dir=copy), lambda _: None)
    assert second is not None and second.version == 2
    assert load_manifest(copy).tracking.registered_version == 2  # type: ignore[union-attr]

    target = tmp_path / "deploy"

    def deployed() -> Manifest:
        m = load_manifest(target)
        assert m.tracking is not None
        return m

    assert "-> 1" in promote(c, "thermal-test", 1, target)
    assert deployed().tracking.registered_version == 1  # type: ignore[union-attr]
    promote(c, "thermal-test", 2, target)
    assert deployed().tracking.registered_version == 2  # type: ignore[union-attr]
    assert deployed().tracking.run_id == second.run_id  # type: ignore[union-attr]
    rows = {r["version"]: r for r in list_versions(c, "thermal-test")}
    assert rows[2]["aliases"] == "champion" and rows[1]["aliases"] == "-"

    assert "2 -> 1" in rollback(c, "thermal-test", target)
    assert deployed().tracking.registered_version == 1  # type: ignore[union-attr]
    assert int(c.get_model_version_by_alias("thermal-test", "champion").version) == 1
    with pytest.raises(Exception, match="nothing to roll back to"):
        rollback(c, "thermal-test", target)


def test_promote_refuses_a_damaged_stored_set(run: SimpleNamespace, tmp_path: Path) -> None:
    c = client(run.uri)
    mv = c.get_model_version("thermal-test", "1")
    onnx = Path(mv.source.removeprefix("file://")) / "iforest.onnx"
    original = onnx.read_bytes()
    try:
        onnx.write_bytes(original[:-10] + b"0123456789")
        target = tmp_path / "deploy"
        with pytest.raises(Exception, match="checksum mismatch"):
            promote(c, "thermal-test", 1, target)
        assert not (target / "manifest.json").exists()
    finally:
        onnx.write_bytes(original)


def test_models_cli_lists_versions(
    run: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list", "--tracking-uri", run.uri, "--name", "thermal-test"]) == 0
    out = capsys.readouterr().out
    assert "thermal-test" in out and run.result.manifest.model_set_version in out
    assert main(["models", "list", "--tracking-uri", run.uri]) == 0  # the only one: no --name
    assert "thermal-test" in capsys.readouterr().out
    assert main(["models", "promote", "99", "--to", str(run.root / "x"),
                 "--tracking-uri", run.uri, "--name", "thermal-test"]) == 2  # fmt: skip
    assert "has no version 99" in capsys.readouterr().err


def test_no_tracking_records_nothing(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "m"), "--no-tracking"])
    cfg = load_config(None, train_overrides(args))
    assert cfg.tracking.enabled is False
    assert record_run(cfg, object(), print) is None  # type: ignore[arg-type]
    assert not (tmp_path / "mlruns.db").exists()


def test_default_store_is_sqlite_beside_the_output(tmp_path: Path) -> None:
    from training.tracking import default_uri

    assert default_uri(tmp_path / "models") == f"sqlite:///{tmp_path / 'mlruns.db'}"


def test_flat_metrics_keeps_numbers_and_series_only() -> None:
    got = list(flat_metrics({"a": {"b": 1, "c": "x", "d": True, "e": [0.5, 0.25]},
                             "f": None, "g": float("nan")}))  # fmt: skip
    assert got == [("a.b", 1.0, 0), ("a.e", 0.5, 0), ("a.e", 0.25, 1)]


def test_report_has_cross_validation_and_importance(run: SimpleNamespace) -> None:
    report = run.out / "report"
    text = (report / "report.md").read_text()
    assert "## Cross-validation" in text and "## Feature importance" in text
    for name in DIAG_FIGURES.values():
        assert (report / name).read_bytes().startswith(PNG_MAGIC)
        assert f"]({name})" in text
    diag = json.loads((report / "diagnostics.json").read_text())
    cv = diag["cv"]
    assert cv["folds"] == 5 and cv["mode"] == "kfold"
    for key in ("iforest", "lstm_ae"):
        assert len(cv[key]["fold_exceed_percent"]) == 5
        assert all(0 <= e <= 100 for e in cv[key]["fold_exceed_percent"])
        # the folds are those of the calibration: every out-of-fold step in exactly one
        assert sum(cv[key]["fold_held_out"]) == len(run.result.calibration)
        # overall, the share above the threshold is the calibration quantile's complement
        mean = sum(
            e * n
            for e, n in zip(cv[key]["fold_exceed_percent"], cv[key]["fold_held_out"], strict=True)
        ) / len(run.result.calibration)
        assert mean == pytest.approx(0.5, abs=0.2)
    perm = diag["importance"]["iforest"]
    assert set(perm["features"]) == set(run.result.manifest.features.names)
    shares = diag["importance"]["lstm_ae_error_share_percent"]
    for group in shares.values():
        assert sum(group.values()) == pytest.approx(100.0)
        assert list(group) == run.result.manifest.sensor_names


def test_unusable_store_is_one_clear_error(run: SimpleNamespace, tmp_path: Path) -> None:
    from training.tracking import TrackingError

    bad = run.cfg.model_copy(
        update={"tracking": run.cfg.tracking.model_copy(update={"uri": "sqlite:////proc/x/m.db"})}
    )
    copy = tmp_path / "models"
    shutil.copytree(run.out, copy)
    with pytest.raises(TrackingError, match=r"cannot start a run.*is complete"):
        record_run(bad, dataclasses.replace(run.result, out_dir=copy), lambda _: None)
    assert load_manifest(copy) == load_manifest(run.out)  # the published set is untouched


def test_console_lists_the_tracked_run_behind_a_model_set(run: SimpleNamespace) -> None:
    """The console's Models page reads the same store: the run, its figures, its version."""
    from edge_console.tracked_runs import TrackingUnavailable, list_runs

    manifest = load_manifest(run.out)
    assert manifest.tracking is not None
    runs = list_runs(run.uri, "edge-agent", limit=5)
    mine = [r for r in runs if r.run_id == manifest.tracking.run_id]
    assert len(mine) == 1, [r.run_id for r in runs]
    listed = mine[0]
    ensemble = run.result.metrics["test"]["ensemble"]
    assert listed.status == "FINISHED"
    assert listed.figures["F1"] == pytest.approx(ensemble["f1"])
    assert listed.figures["MAR %"] == pytest.approx(ensemble["mar_percent"])
    assert listed.registered == f"thermal-test/{manifest.tracking.registered_version}"
    assert listed.started.endswith("Z")
    with pytest.raises(TrackingUnavailable, match="no experiment 'nope'"):
        list_runs(run.uri, "nope")
