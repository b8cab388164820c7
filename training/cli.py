"""``edge-train`` (also ``python -m training``): generate data, train a model set, evaluate one.

Every data or configuration problem ends in one clear message on stderr and exit code 2,
never a traceback: the person running this needs the fix, not the call stack.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.pipeline.manifest import ManifestError

from .config import TrainConfigError, load_config
from .data import DataError
from .tracking import TrackingError

EXIT_USAGE = 2
PROG = "edge-train"


def _separator(text: str) -> str:
    """``\\t`` and ``tab`` mean a tab (hard to type on a command line)."""
    return "\t" if text in ("\\t", "tab", "TAB") else text


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="training config YAML (default: built-in defaults, as in config/training.yaml)",
    )


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data format (override the config's data section)")
    g.add_argument("--timestamp-column", help="column holding ISO 8601 times or Unix seconds")
    g.add_argument("--separator", type=_separator, help="field separator, e.g. ';' or '\\t'")
    g.add_argument(
        "--sensors", help="comma-separated sensor columns (default: every numeric column)"
    )
    g.add_argument("--label-column", help="0/1 label column, or 'none' for unlabelled data")
    g.add_argument("--exclude", help="comma-separated numeric columns that are not sensors")
    g.add_argument("--step-seconds", type=float, help="resample period (default: median spacing)")
    g.add_argument("--max-gap-seconds", type=float, help="longest gap to interpolate")


def _data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    def names(text: str) -> list[str]:
        return [s.strip() for s in text.split(",") if s.strip()]

    o: dict[str, Any] = {}
    if getattr(args, "data", None) is not None:
        o["data.path"] = str(args.data)
    if args.timestamp_column is not None:
        o["data.timestamp_column"] = args.timestamp_column
    if args.separator is not None:
        o["data.separator"] = args.separator
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
    o = _data_overrides(args)
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


def cmd_generate(args: argparse.Namespace) -> int:
    from edge_agent.tools.simulator import generate_dataset, generate_fleet

    sim = load_config(args.config).simulator
    steps = args.steps if args.steps is not None else sim.steps
    events = args.events if args.events is not None else sim.events
    seed = args.seed if args.seed is not None else sim.seed
    day = args.day_seconds if args.day_seconds is not None else sim.day_seconds
    units = args.units if args.units is not None else sim.units
    t0 = time.perf_counter()
    try:
        designs, described = _designs(args, units, seed)
        if units > 1:
            result = generate_fleet(
                units, steps, events, seed=seed, day_seconds=day, designs=designs
            )
        else:
            result = generate_dataset(steps, events, seed=seed, day_seconds=day, design=designs[0])
    except ValueError as exc:  # e.g. more events than fit in the steps, an unknown plant
        raise DataError(f"cannot simulate: {exc}") from None
    print(described)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(args.out)
    print(
        f"wrote {args.out}: {steps} steps, {len(result.events)} faults "
        f"({100 * float(result.labels.mean()):.2f}% anomalous steps), seed {seed}, "
        f"{units} unit(s), {time.perf_counter() - t0:.1f}s"
    )
    return 0


def _designs(args: argparse.Namespace, units: int, seed: int) -> tuple[list[Any], str]:
    """Unit designs for ``generate`` and a line saying which plants they are."""
    from edge_agent.tools.plants import REFERENCE_DESIGN, find_plant, pick_plants, unit_design

    if args.plant is not None:
        plant = find_plant(args.plant)
        return [unit_design(plant)], (
            f"plant {plant.name} ({plant.gppd_id}, {plant.fuel}, {plant.capacity_mw:g} MW = "
            f"{plant.units} x {plant.unit_mw:.0f} MW units): simulating {units} unit(s)"
        )
    if args.fuel is not None:
        plants = pick_plants(args.fuel, units, seed)
        names = ", ".join(f"{p.name} ({p.unit_mw:.0f} MW unit)" for p in plants)
        return [unit_design(p) for p in plants], f"{args.fuel} plants: {names}"
    return [REFERENCE_DESIGN], "reference unit: 600 MW coal"


def run_train(args: argparse.Namespace) -> Any:
    """The ``train`` command on parsed arguments; returns the pipeline's TrainResult."""
    from .pipeline import train

    cfg = load_config(args.config, train_overrides(args))
    if not getattr(args, "force", False):
        refuse_to_overwrite(Path(cfg.output_dir))
    return train(cfg)


def refuse_to_overwrite(out: Path) -> None:
    """Training replaces a model set only when asked: ``models/`` is in git, and a set in
    use on an edge box is not something to lose by a default argument."""
    manifest = out / "manifest.json"
    if not manifest.exists():
        return
    try:
        version = json.loads(manifest.read_text(encoding="utf-8")).get("model_set_version")
    except (OSError, ValueError, AttributeError):
        version = None
    held = f"model set {version}" if version else "a model set"
    raise TrainConfigError(
        f"{out.absolute()} already holds {held}; pass --force to replace it, or --out a new "
        "directory (e.g. --out runs/models)"
    )


def cmd_train(args: argparse.Namespace) -> int:
    run_train(args)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from edge_agent.pipeline.scoring import ModelSet

    from .data import load_csv
    from .evaluation import evaluate_scored, score_steps
    from .report import metrics_table

    cfg = load_config(args.config, _data_overrides(args))
    model_set = ModelSet.load(args.models, threads=cfg.threads)
    manifest = model_set.manifest
    spec = cfg.data.spec()
    if spec.sensors is None:  # the model set decides which columns are sensors
        spec = spec.with_overrides(sensors=tuple(manifest.sensor_names))
    if spec.step_seconds is None:
        spec = spec.with_overrides(step_seconds=manifest.step_seconds)
    elif spec.step_seconds != manifest.step_seconds:
        print(
            f"warning: resampling to {spec.step_seconds:g}s, but the models were trained on "
            f"{manifest.step_seconds:g}s steps",
            file=sys.stderr,
        )
    data = load_csv(args.data, spec)
    if data.labels is None:
        raise DataError(f"{args.data}: evaluate needs a label column (see --label-column)")
    scored = score_steps(model_set, data, slice(0, data.n_steps))
    if len(scored) == 0:
        raise DataError(
            f"{args.data}: {data.n_steps} steps, fewer than one window of {model_set.window}"
        )
    metrics = evaluate_scored(
        scored, dict(manifest.models), manifest.voting, data.step_seconds, model_set.window - 1
    )
    print(
        f"model set {manifest.model_set_version} ({args.models}) on {args.data}: "
        f"{len(scored)} steps scored of {data.n_steps} "
        f"(the first {model_set.window - 1} have no full window), "
        f"{int(scored.labels.sum()) if scored.labels is not None else 0} anomalous"
    )
    print("point decisions:")
    print(metrics_table(metrics["point"]))
    print(f"alarm episodes (on/off delays {cfg_alarm_text()}):")
    print(metrics_table(metrics["alarm"]))
    if args.json is not None:
        payload = {
            "model_set_version": manifest.model_set_version,
            "models_dir": str(args.models),
            "data": str(args.data),
            "data_sha256": data.sha256,
            "steps_scored": len(scored),
            "step_seconds": data.step_seconds,
            "thresholds": {k: m.threshold for k, m in manifest.models.items()},
            "voting": manifest.voting.model_dump(mode="json"),
            "metrics": metrics,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"metrics written to {args.json}")
    return 0


def cfg_alarm_text() -> str:
    from edge_agent.config import AlarmSettings

    a = AlarmSettings()
    return f"{a.on_delay}/{a.off_delay} steps, the agent's defaults"


def schema_text() -> str:
    """The manifest schema exactly as committed (sorted keys, 2-space indent, final newline)."""
    from edge_agent.pipeline.manifest import manifest_json_schema

    return json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    if args.out is None:
        sys.stdout.write(schema_text())
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "schema": cmd_schema,
    "models": lambda args: args.models_func(args),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (DataError, TrainConfigError, ManifestError, TrackingError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # unwritable output directory, disk full, ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{PROG}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
