"""End to end through the ``edge-train`` CLI: generate a small CSV, train a fast model set,
check the manifest, the report, ``evaluate``, out-of-fold calibration, and that onnxruntime
scores like the native models. One training run (window 20, 20 trees, 2 epochs) is shared
by most of the module."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import numpy as np
import pytest

from edge_agent.pipeline.features import compute_features
from edge_agent.pipeline.manifest import Manifest, load_manifest
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names
from edge_agent.pipeline.windows import sliding_windows
from training.cli import main, run_train
from training.cli_args import build_parser, train_overrides
from training.config import TrainConfig, load_config
from training.metrics import detection_metrics

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "training.yaml"
SENSORS = sensor_names(THERMAL_UNIT_SENSORS)
WINDOW = 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("edge_train")
    data = root / "sim.csv"
    assert main(["generate", "--out", str(data), "--steps", "4000", "--events", "5"]) == 0
    out = root / "models"
    argv = [
        "train",
        "--config", str(CONFIG),
        "--data", str(data),
        "--out", str(out),
        "--window", str(WINDOW),
        "--trees", "20",
        "--epochs", "2",
        "--max-train-windows", "1500",
        "--threads", "2",
    ]  # fmt: skip
    printed = io.StringIO()
    with redirect_stdout(printed):
        result = run_train(build_parser().parse_args(argv))
    return SimpleNamespace(root=root, data=data, out=out, result=result, stdout=printed.getvalue())


def windows_ending_in(run: SimpleNamespace, steps: slice) -> np.ndarray:
    values = run.result.data.values
    return sliding_windows(values[steps.start - WINDOW + 1 : steps.stop], WINDOW)


# --- what train wrote ------------------------------------------------------------------------


def test_manifest_loads_and_describes_the_run(run: SimpleNamespace) -> None:
    m = load_manifest(run.out, SENSORS)
    assert m.format_version == 1
    assert re.fullmatch(r"\d{8}-[0-9a-f]{8}", m.model_set_version)
    assert m.training_data_sha256 == hashlib.sha256(run.data.read_bytes()).hexdigest()
    assert m.window == WINDOW and m.step_seconds == 1.0
    assert set(m.models) == {"iforest", "lstm_ae"}
    assert m.models["iforest"].params["n_estimators"] == 20
    assert m.models["lstm_ae"].params["epochs_run"] <= 2
    assert m.voting.strategy == "calibrated" and m.voting.weights == {
        "iforest": 0.5,
        "lstm_ae": 0.5,
    }
    assert m.voting.quantile == 0.995
    s0 = m.sensors[0]  # simulator sensors keep their instrument ranges, and get an envelope
    assert (s0.unit, s0.lo, s0.hi) == ("degC", 0.0, 700.0)
    fit = run.result.data.values[run.result.split.fit, 0]
    assert (s0.envelope_lo, s0.envelope_hi) == (float(fit.min()), float(fit.max()))
    assert m.metrics["train_seconds"]["fit"] > 0 and m.metrics["train_seconds"]["fold_5"] > 0
    assert set(m.metrics["test"]) == {"iforest", "lstm_ae", "ensemble"}
    assert set(m.metrics["test_alarm"]) == {"iforest", "lstm_ae", "ensemble"}
    assert m.metrics["data"]["split_steps"] == {"fit": 3200, "test": 800}
    assert m.metrics["data"]["calibration_mode"] == "kfold"
    assert "note" in m.scalers and len(m.scalers["lstm_ae"]["center"]) == len(SENSORS)
    assert len(m.scalers["iforest"]["center"]) == m.feature_spec.n_features
    for dist in ("numpy", "scikit-learn", "tensorflow", "keras", "tf2onnx", "onnxruntime"):
        assert m.versions[dist] != "not installed"


def test_manifest_written_by_train_matches_the_committed_schema(run: SimpleNamespace) -> None:
    schema = json.loads((REPO / "edge_agent/schemas/manifest.schema.json").read_text("utf-8"))
    jsonschema.validate(json.loads((run.out / "manifest.json").read_text("utf-8")), schema)


def test_train_prints_progress_with_timings(run: SimpleNamespace) -> None:
    text = run.stdout
    for expected in (
        "loading",
        "fitting both models on all 3181 fit windows",
        "lstm_ae epoch 1/2",
        "fold 5/5: refitting on",
        "exporting both models to ONNX: done in",
        "calibrated on 3181 out-of-sample steps (kfold)",
        "scoring the evaluation steps with onnxruntime",
        "test point ensemble",
        "test alarm ensemble",
        "written to",
    ):
        assert expected in text, expected
    assert not list(run.out.parent.glob(".*.partial")), "staging directory left behind"


def test_report_has_figures_and_markdown(run: SimpleNamespace) -> None:
    report = run.out / "report"
    md = (report / "report.md").read_text("utf-8")
    for png in (
        "score_distributions.png",
        "lstm_training.png",
        "sensor_contributions.png",
        "test_timeseries.png",
    ):
        assert (report / png).read_bytes()[:8] == PNG_MAGIC, png
        assert f"({png})" in md
    assert "| ensemble |" in md and run.result.manifest.model_set_version in md


# --- the exported models score like the native ones -------------------------------------------


def test_onnx_scores_equal_native_scores(run: SimpleNamespace) -> None:
    from training.lstm_ae import keras_errors

    model_set = ModelSet.load(run.out)
    windows = windows_ending_in(run, run.result.split.test)
    onnx = model_set.score(windows)
    features = compute_features(windows, model_set.feature_spec)
    native_if = -run.result.iforest.decision_function(features)  # sign: higher = anomalous
    np.testing.assert_allclose(onnx.scores["iforest"], native_if, rtol=0, atol=1e-3)
    window_error, sensor_error = keras_errors(run.result.lstm_scoring_model, windows)
    np.testing.assert_allclose(onnx.scores["lstm_ae"], window_error, rtol=1e-5, atol=1e-4)
    assert onnx.per_sensor is not None
    np.testing.assert_allclose(onnx.per_sensor, sensor_error, rtol=1e-5, atol=1e-4)


def test_thresholds_are_quantiles_of_the_out_of_fold_scores(run: SimpleNamespace) -> None:
    from edge_agent.pipeline.ensemble import fused_score

    m = ModelSet.load(run.out).manifest
    cal = run.result.calibration
    np.testing.assert_array_equal(cal.steps, np.arange(WINDOW - 1, 3200))  # every fit window
    for key, entry in m.models.items():
        oof = cal.scores[key]
        assert entry.threshold == pytest.approx(np.quantile(oof, 0.995))
        assert entry.score_center == pytest.approx(np.median(oof))
        assert entry.score_scale == pytest.approx(entry.threshold - entry.score_center)
    fused = fused_score(cal.scores, m.models, m.voting.weights)
    assert m.voting.fused_threshold == pytest.approx(np.quantile(fused, 0.995))
    # out of fold scores are out of sample: the final models score their own training
    # windows lower than the fold models that never saw them
    in_sample = ModelSet.load(run.out).score(windows_ending_in(run, slice(WINDOW - 1, 3200)))
    assert np.median(in_sample.scores["lstm_ae"]) < np.median(cal.scores["lstm_ae"])


def test_manifest_test_metrics_are_those_of_the_onnx_models(run: SimpleNamespace) -> None:
    model_set = ModelSet.load(run.out)
    test = run.result.split.test
    votes = model_set.score(windows_ending_in(run, test)).votes
    recomputed = detection_metrics(
        run.result.data.labels[test], votes.ensemble_decision, 1.0, settle_steps=WINDOW - 1
    )
    stored = model_set.manifest.metrics["test"]["ensemble"]
    assert stored == pytest.approx(recomputed)
    from training.alarm_eval import alarm_states

    timestamps = run.result.data.timestamps[test]
    alarm = detection_metrics(
        run.result.data.labels[test],
        alarm_states(votes.ensemble_decision, timestamps),
        1.0,
        settle_steps=WINDOW - 1,
    )
    assert model_set.manifest.metrics["test_alarm"]["ensemble"] == pytest.approx(alarm)


# --- evaluate --------------------------------------------------------------------------------


def test_evaluate_prints_the_metric_table_and_writes_json(
    run: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = run.root / "eval.json"
    rc = main(
        ["evaluate", "--models", str(run.out), "--data", str(run.data), "--json", str(out_json)]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    header = next(line for line in printed.splitlines() if line.startswith("detector"))
    for column in (
        "precision",
        "recall",
        "F1",
        "FAR %",
        "MAR %",
        "event recall",
        "false alarms/day",
    ):
        assert column in header
    for detector in ("iforest", "lstm_ae", "ensemble"):
        assert re.search(rf"^{detector}\s+(\d|n/a)", printed, re.MULTILINE), detector
    payload = json.loads(out_json.read_text("utf-8"))
    steps_scored = 4000 - WINDOW + 1
    assert payload["steps_scored"] == steps_scored
    assert "alarm episodes (on/off delays 3/10 steps" in printed
    ens = payload["metrics"]["point"]["ensemble"]
    assert ens["tp"] + ens["fp"] + ens["fn"] + ens["tn"] == steps_scored
    assert ens["anomalous_points"] == int(run.result.data.labels[WINDOW - 1 :].sum())


def test_evaluate_needs_labels(run: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    unlabelled = run.root / "unlabelled.csv"
    with run.data.open(newline="") as src, unlabelled.open("w", newline="") as dst:
        writer = csv.writer(dst)
        for i, row in enumerate(csv.reader(src)):
            if i > 300:
                break
            writer.writerow(row[:-2])  # drop label and fault_kind
    rc = main(
        ["evaluate", "--models", str(run.out), "--data", str(unlabelled), "--label-column", "none"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "evaluate needs a label column" in err and "Traceback" not in err


# --- errors and options ----------------------------------------------------------------------


def test_data_error_exits_2_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,a,b\n" + "".join(f"{i},{i},3\n" for i in range(200)), "utf-8")
    out = str(tmp_path / "m")
    rc = main(["train", "--data", str(bad), "--out", out, "--sensors", "a,b"])  # b named
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("edge-train: error: ") and "column 'b'" in err and "constant" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_config_errors_name_every_bad_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("window: 1\niforest: {n_estimators: 0}\nbogus: 3\n", "utf-8")
    rc = main(["train", "--config", str(cfg), "--data", "x.csv"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    for key in ("window", "iforest.n_estimators", "bogus"):
        assert key in err


def test_shipped_config_documents_the_defaults() -> None:
    assert load_config(CONFIG) == TrainConfig()


def test_command_line_overrides_the_config() -> None:
    args = build_parser().parse_args(
        ["train", "--config", str(CONFIG), "--window", "33", "--sensors", "a, b",
         "--label-column", "none", "--separator", "\\t", "--trees", "7", "--out", "elsewhere",
         "--kfold-max-windows", "0"]
    )  # fmt: skip
    cfg = load_config(args.config, train_overrides(args))
    assert cfg.window == 33 and cfg.iforest.n_estimators == 7
    assert cfg.calibration.kfold_max_windows == 0
    assert cfg.data.sensors == ["a", "b"] and cfg.data.label_column is None
    assert cfg.data.separator == "\t" and cfg.output_dir == Path("elsewhere")
    assert cfg.lstm_ae.epochs == load_config(CONFIG).lstm_ae.epochs  # untouched keys stay


@pytest.mark.parametrize("command", ["generate", "train", "evaluate", "schema"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert f"usage: edge-train {command}" in capsys.readouterr().out


def test_python_dash_m_training_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "training", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "generate" in proc.stdout and "evaluate" in proc.stdout


# --- small unlabelled exports ------------------------------------------------------------------


def _export_csv(path: Path, rows: int, seed: int, labels: bool) -> None:
    from edge_agent.tools.simulator import random_fault_schedule, settled_run

    r = settled_run(rows, random_fault_schedule(rows, 1, seed=seed, warmup=150), seed=seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["datetime", *SENSORS, *(["anomaly"] if labels else [])])
        for ts, row, y in zip(r.timestamps, r.values, r.labels, strict=True):
            stamp = np.datetime_as_string(np.datetime64(int(ts), "s"))  # naive: taken as UTC
            w.writerow([stamp, *row.tolist(), *([int(y)] if labels else [])])


SMALL = ["--window", "20", "--trees", "10", "--epochs", "1", "--threads", "1", "--no-report"]


def _train_small(data: Path, out: Path, *extra: str) -> tuple[Any, Manifest, io.StringIO]:
    """``edge-train train`` of an export with nothing but SMALL (and ``extra``) named — not
    even its ';' separator: result, manifest, what it printed."""
    argv = ["train", "--data", str(data), "--out", str(out), *SMALL, *extra]
    printed = io.StringIO()
    with redirect_stdout(printed):
        result = run_train(build_parser().parse_args(argv))
    return result, load_manifest(out), printed


def test_a_fit_part_shorter_than_a_day_is_warned_about() -> None:
    from training.pipeline import MIN_FIT_HOURS, fit_span_warning

    assert fit_span_warning(int(MIN_FIT_HOURS * 3600), 1.0) is None
    assert fit_span_warning(8640, 10.0) is None  # 24 h of 10 s steps
    short = fit_span_warning(4702, 1.0)
    assert short is not None and short.startswith("the fit part covers 1.3 h of operation")
    assert "(4702 steps of 1 s)" in short and "days to weeks" in short
    assert fit_span_warning(86399, 1.0) is not None


def test_a_400_row_unlabelled_export_fits_and_calibrates_on_every_row(tmp_path: Path) -> None:
    data = tmp_path / "export.csv"
    _export_csv(data, 400, seed=41, labels=False)
    # neither the time nor the label column named: "datetime" holds the times, no label
    result, m, printed = _train_small(data, tmp_path / "m")
    d = m.metrics["data"]
    assert (d["timestamp_column"], d["label_column"]) == ("datetime", None)
    assert "timestamp column: 'datetime' (guessed from the file" in printed.getvalue()
    assert "no label column found: unlabelled" in printed.getvalue()
    assert m.sensor_names == list(SENSORS)
    assert d["split_steps"] == {"fit": 400, "test": 0}  # no rows lost to a split
    # 400 rows of 1 s: training says the set cannot know the plant, and the manifest keeps it
    assert d["fit_hours"] == pytest.approx(400 / 3600)
    [warning] = m.training_warnings
    assert warning.startswith("the fit part covers 6.7 min of operation (400 steps of 1 s)")
    assert f"warning: {warning}" in printed.getvalue()
    assert d["calibration_mode"] == "kfold" and d["folds"] == 5
    windows = 400 - 20 + 1
    assert m.metrics["out_of_sample"]["steps"] == windows  # every window scored out of fold
    assert m.models["iforest"].params["training_rows"] == windows  # final models: all rows
    assert d["lstm_training_windows"] == windows - round(windows * 0.1)  # minus the tail
    assert result.test is None


def test_a_european_pi_style_export_trains_like_its_iso_twin(tmp_path: Path) -> None:
    """Decimal commas, day-first dotted times and a "Bad Input" cell, no option named: the
    same model set as the ISO export with decimal points (and the same Bad Input)."""
    from datetime import UTC, datetime

    plain = tmp_path / "plain.csv"
    _export_csv(plain, 400, seed=43, labels=False)
    lines = plain.read_text(encoding="utf-8").splitlines()
    lines[5] = ";".join([lines[5].split(";")[0], "Bad Input", *lines[5].split(";")[2:]])
    plain.write_text("\n".join(lines) + "\n", encoding="utf-8")
    euro = tmp_path / "euro.csv"
    out = ["Zeitstempel" + lines[0][len("datetime") :]]
    for line in lines[1:]:
        stamp, *cells = line.split(";")
        t = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        out.append(";".join([f"{t:%d.%m.%Y %H:%M:%S}", *(c.replace(".", ",") for c in cells)]))
    euro.write_text("\n".join(out) + "\n", encoding="utf-8")
    _, ref, _ = _train_small(plain, tmp_path / "ref")
    _, m, printed = _train_small(euro, tmp_path / "m")
    d = m.metrics["data"]
    assert (d["separator"], d["decimal"], d["time_format"]) == (";", ",", "%d.%m.%Y %H:%M:%S")
    assert d["timestamp_column"] == "Zeitstempel"
    assert d["text_cells"] == {SENSORS[0]: {"count": 1, "first_line": 6, "first": "Bad Input"}}
    text = printed.getvalue()
    for said in (
        "fields separated by ';' (guessed",
        "decimal mark ',' (guessed",
        "times read as '%d.%m.%Y %H:%M:%S' (guessed",
        f"text cells read as missing readings: '{SENSORS[0]}' 1 (the first 'Bad Input'",
    ):
        assert said in text, said  # fmt: skip
    assert m.sensor_names == ref.sensor_names
    for key, entry in m.models.items():
        assert entry.threshold == ref.models[key].threshold
    assert [s.envelope_hi for s in m.sensors] == [s.envelope_hi for s in ref.sensors]


def test_kfold_max_windows_0_holds_out_the_fits_last_share(tmp_path: Path) -> None:
    data = tmp_path / "export.csv"
    _export_csv(data, 400, seed=41, labels=False)
    result, m, printed = _train_small(data, tmp_path / "m", "--kfold-max-windows", "0")
    d = m.metrics["data"]
    assert d["calibration_mode"] == "holdout" and d["folds"] == 0
    windows = 400 - 20 + 1
    held = windows - round(windows * 0.8)  # the last 20 % of the fit windows
    assert m.metrics["out_of_sample"]["steps"] == held
    np.testing.assert_array_equal(result.calibration.steps, np.arange(400 - held, 400))
    # the final models never saw a held-out window, nor one sharing a step with it
    assert m.models["iforest"].params["training_rows"] == windows - held - (20 - 1)
    assert f"the last {held} are held out to place the thresholds" in printed.getvalue()


def test_an_export_with_an_outage_trains_and_no_window_spans_it(tmp_path: Path) -> None:
    """A historian export with a 3-minute outage (rows missing) and one transmitter out for a
    minute: training goes on, reports both, and fits, calibrates and judges only windows of
    real readings (the agent restarts its window after a stale step, too)."""
    data = tmp_path / "export.csv"
    _export_csv(data, 700, seed=44, labels=False)
    lines = data.read_text().splitlines()
    header, body = lines[0], lines[1:]
    body = body[:300] + body[480:]  # steps 300..479 absent: 180 s
    cells = [c.split(";") for c in body]
    for row in cells[400:460]:  # steps 580..639: the second sensor's transmitter is out
        row[2] = ""
    data.write_text("\n".join([header, *(";".join(c) for c in cells)]) + "\n")
    result, m, printed = _train_small(data, tmp_path / "m")
    gaps = m.metrics["data"]["gaps"]
    assert gaps["count"] == 2 and gaps["steps"] == 180 + 60
    assert [(g["start_step"], g["steps"], g["column"]) for g in gaps["first"]] == [
        (300, 180, None),
        (580, 60, SENSORS[1]),
    ]
    assert "2 gap(s) longer than 5 s (data.max_gap_seconds) not interpolated" in (
        printed.getvalue()
    )
    window = 20
    ends = result.data.window_ends(window)
    expected = [t for t in range(window - 1, 700) if not (300 <= t < 300 + 180 + window - 1)]
    expected = [t for t in expected if not (580 <= t < 580 + 60 + window - 1)]
    assert ends.tolist() == expected
    assert result.calibration.steps.tolist() == expected  # every real window, out of fold
    assert m.models["iforest"].params["training_rows"] == len(expected)
    assert m.metrics["data"]["fit_hours"] == pytest.approx(700 / 3600)  # the span it covers


def test_labels_never_fit_a_model_or_place_a_threshold(tmp_path: Path) -> None:
    """The same rows with and without a label column give the same model set."""
    thresholds = []
    for labels in (True, False):
        data = tmp_path / f"d{labels}.csv"
        _export_csv(data, 500, seed=43, labels=labels)
        out = tmp_path / f"m{labels}"
        argv = ["train", "--data", str(data), "--out", str(out), "--separator", ";",
                "--timestamp-column", "datetime", "--test-fraction", "0.2",
                "--label-column", "anomaly" if labels else "none", *SMALL]  # fmt: skip
        with redirect_stdout(io.StringIO()):
            run_train(build_parser().parse_args(argv))
        m = load_manifest(out)
        thresholds.append(
            [v for e in m.models.values() for v in (e.threshold, e.score_center, e.score_scale)]
            + [m.voting.fused_threshold]
        )
    assert thresholds[0] == pytest.approx(thresholds[1], rel=1e-4)


def test_a_manifest_the_agent_would_refuse_is_one_clear_error() -> None:
    from edge_agent.pipeline.manifest import ManifestError
    from training.pipeline import _checked_manifest

    base = json.loads((REPO / "models" / "manifest.json").read_text(encoding="utf-8"))
    assert _checked_manifest(base).model_set_version == base["model_set_version"]
    base["sensors"][1]["roughness_hi"] = -8.47e-21  # what a held signal once produced
    with pytest.raises(
        ManifestError, match=r"(?s)would refuse \(a bug in edge-train\).*roughness_hi"
    ):
        _checked_manifest(base)
