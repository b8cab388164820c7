"""``edge-train``'s command line: the parser, and how its options map onto config keys.

Options override the training config (``--epochs`` sets ``lstm_ae.epochs``, ...); the
mapping is here so that what a flag changes is read in one place. The commands themselves
are :mod:`training.cli`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_agent.tools.recorded_csv import add_layout_options

PROG = "edge-train"


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="training config YAML (default: built-in defaults, as in config/training.yaml)",
    )


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data format (override the config's data section)")
    g.add_argument(
        "--timestamp-column",
        help="column holding ISO 8601 times or Unix seconds (default auto: 'timestamp', "
        "else the one column of date-times)",
    )
    add_layout_options(g, default=None)
    g.add_argument(
        "--sensors", help="comma-separated sensor columns (default: every numeric column)"
    )
    g.add_argument(
        "--label-column",
        help="0/1 label column, or 'none' for unlabelled data (default auto: 'label', "
        "else a 0/1 column named like anomaly/fault, else none)",
    )
    g.add_argument("--exclude", help="comma-separated numeric columns that are not sensors")
    g.add_argument("--step-seconds", type=float, help="resample period (default: median spacing)")
    g.add_argument(
        "--max-gap-seconds",
        type=float,
        help="longest gap to interpolate; no window spans a longer one",
    )


def data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    def names(text: str) -> list[str]:
        return [s.strip() for s in text.split(",") if s.strip()]

    o: dict[str, Any] = {}
    if getattr(args, "data", None) is not None:
        o["data.path"] = str(args.data)
    if args.timestamp_column is not None:
        o["data.timestamp_column"] = args.timestamp_column
    if args.separator is not None:
        o["data.separator"] = args.separator
    if args.decimal is not None:
        o["data.decimal"] = args.decimal
    if args.time_format is not None:
        o["data.time_format"] = args.time_format
    if args.sensors is not None:
        o["data.sensors"] = names(args.sensors)
    if args.label_column is not None:
        o["data.label_column"] = None if args.label_column.lower() == "none" else args.label_column
    if args.exclude is not None:
        o["data.exclude"] = names(args.exclude)
    if args.step_seconds is not None:
        o["data.step_seconds"] = args.step_seconds
    if args.max_gap_seconds is not None:
        o["data.max_gap_seconds"] = args.max_gap_seconds
    return o


def build_parser() -> argparse.ArgumentParser:
    """Every ``edge-train`` command's parser (``models`` is from :mod:`training.registry`)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train the edge agent's anomaly models and export them to ONNX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "generate",
        help="simulate a thermal unit and write a labelled CSV",
        description="Simulate a thermal unit with injected faults and write a labelled CSV "
        "(columns: timestamp, one per sensor, label, fault_kind). Sizes default to the "
        "config's simulator section.",
    )
    _add_config(gen)
    gen.add_argument("--out", type=Path, required=True, help="CSV file to write")
    gen.add_argument("--steps", type=int, help="number of 1-second steps")
    gen.add_argument("--events", type=int, help="number of injected faults")
    gen.add_argument("--seed", type=int, help="random seed")
    gen.add_argument("--day-seconds", type=float, help="length of a simulated day in seconds")
    gen.add_argument("--units", type=int, help="units simulated one after another")
    real = gen.add_mutually_exclusive_group()
    real.add_argument(
        "--plant",
        help="a real plant (GPPD name or id, e.g. 'VINDH_CHAL STPS' or IND0000503): --units "
        "units of that plant's design (default: the 600 MW reference coal unit)",
    )
    real.add_argument(
        "--fuel",
        choices=("coal", "gas", "oil"),
        help="--units different real plants of this fuel (seeded choice), one unit each",
    )

    tr = sub.add_parser(
        "train",
        help="train both models, export ONNX, write manifest.json and a report",
        description="Train the Isolation Forest and the LSTM autoencoder on a CSV (every row "
        "of the fit part is taken as normal operation; labels, if any, only evaluate), export "
        "both to ONNX, place the thresholds on out-of-fold scores (k-fold; a hold-out for large "
        "data), evaluate through onnxruntime on a test part or --eval-data, and write "
        "manifest.json plus report/ into the output directory. Command-line options override "
        "the config.",
    )
    _add_config(tr)
    tr.add_argument("--data", type=Path, help="training CSV (overrides data.path)")
    tr.add_argument(
        "--out",
        type=Path,
        help="output directory (overrides output_dir); must not hold a model set yet, "
        "unless --force",
    )
    tr.add_argument(
        "--force",
        action="store_true",
        help="replace the model set already in the output directory (e.g. the shipped models/)",
    )
    _add_data_options(tr)
    g = tr.add_argument_group("model options (override the config)")
    g.add_argument("--window", type=int, help="steps per scored window")
    g.add_argument("--rolling", type=int, help="steps of the rolling feature statistics")
    g.add_argument("--trees", type=int, help="Isolation Forest trees")
    g.add_argument("--max-samples", type=int, help="Isolation Forest samples per tree")
    g.add_argument("--epochs", type=int, help="maximum LSTM epochs")
    g.add_argument("--batch-size", type=int, help="LSTM batch size")
    g.add_argument("--max-train-windows", type=int, help="LSTM training windows (subsampled)")
    g.add_argument("--seed", type=int, help="seed of both models")
    g.add_argument("--threads", type=int, help="CPU threads for training")
    g.add_argument(
        "--quantile",
        type=float,
        help="calibration quantile of out-of-sample normal scores (1 - point false-alarm rate)",
    )
    g.add_argument("--folds", type=int, help="time-ordered folds for out-of-fold calibration")
    g.add_argument(
        "--kfold-max-windows",
        type=int,
        help="k-fold calibration up to this many fit windows, a hold-out above (0: always "
        "hold out)",
    )
    g.add_argument(
        "--holdout",
        type=float,
        help="share of the fit part held out to calibrate when it is too large for k-fold",
    )
    g.add_argument(
        "--alarms-per-day",
        type=float,
        help="stated false-alarm rate of alarms per unit per day on normal operation; raises "
        "the ensemble threshold where needed (default: point rate only)",
    )
    g.add_argument(
        "--test-fraction",
        type=float,
        help="share of the data at its end held out for evaluation (default: 0.2 with labels)",
    )
    tr.add_argument(
        "--eval-data", type=Path, help="labelled CSV (same columns) to evaluate on instead"
    )
    g.add_argument("--no-report", action="store_true", help="skip report/ (figures, report.md)")
    t = tr.add_argument_group("tracking (override the config's tracking section)")
    t.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: sqlite:///<out>/../mlruns.db)",
    )
    t.add_argument("--experiment", help="MLflow experiment name")
    t.add_argument("--registered-model", help="registered model name (one per sensor set)")
    t.add_argument("--no-tracking", action="store_true", help="do not record this run")

    ev = sub.add_parser(
        "evaluate",
        help="score a labelled CSV with an exported model set (onnxruntime)",
        description="Score a labelled CSV with the ONNX models of a model set, through the same "
        "onnxruntime code the agent runs, and print point metrics, event recall, mean "
        "detection delay and false alarms per day, per model and for the ensemble.",
    )
    _add_config(ev)
    ev.add_argument("--models", type=Path, required=True, help="model set directory")
    ev.add_argument("--data", type=Path, required=True, help="labelled CSV")
    ev.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    _add_data_options(ev)

    sc = sub.add_parser(
        "schema",
        help="write the manifest JSON Schema",
        description="Write the JSON Schema of manifest.json, generated from the Manifest model "
        "the agent validates with (the committed copy must equal it; a test checks).",
    )
    sc.add_argument(
        "--out",
        type=Path,
        default=None,
        help="file to write (default: print to stdout); the committed copy is "
        "edge_agent/schemas/manifest.schema.json",
    )

    from .registry import add_models_parser

    add_models_parser(sub, _add_config)
    return parser


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides (dotted keys) from ``train``'s options."""
    o = data_overrides(args)
    pairs = {
        "out": "output_dir",
        "window": "window",
        "rolling": "rolling",
        "trees": "iforest.n_estimators",
        "max_samples": "iforest.max_samples",
        "epochs": "lstm_ae.epochs",
        "batch_size": "lstm_ae.batch_size",
        "max_train_windows": "lstm_ae.max_train_windows",
        "seed": "seed",
        "threads": "threads",
        "quantile": "calibration.quantile",
        "folds": "calibration.folds",
        "kfold_max_windows": "calibration.kfold_max_windows",
        "holdout": "calibration.holdout",
        "alarms_per_day": "calibration.alarms_per_day",
        "test_fraction": "split.test",
        "eval_data": "eval_data",
    }
    for attr, key in pairs.items():
        value = getattr(args, attr)
        if value is not None:
            o[key] = str(value) if isinstance(value, Path) else value
    if args.no_report:
        o["report"] = False
    for attr, key in (
        ("tracking_uri", "tracking.uri"),
        ("experiment", "tracking.experiment"),
        ("registered_model", "tracking.registered_model"),
    ):
        if getattr(args, attr) is not None:
            o[key] = getattr(args, attr)
    if args.no_tracking:
        o["tracking.enabled"] = False
    return o
