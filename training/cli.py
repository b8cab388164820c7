"""``edge-train`` (also ``python -m training``): generate data, train a model set, evaluate one.

Every data or configuration problem ends in one clear message on stderr and exit code 2,
never a traceback: the person running this needs the fix, not the call stack. The parser and
the options' config keys are :mod:`training.cli_args`.
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

from .cli_args import PROG, build_parser, data_overrides, train_overrides
from .config import TrainConfigError, load_config
from .data import DataError
from .tracking import TrackingError

EXIT_USAGE = 2


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

    cfg = load_config(args.config, data_overrides(args))
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
        f"(the first {model_set.window - 1} have no full window"
        + (
            f"; {len(data.gaps)} long gap(s) and the window after each are skipped"
            if data.gaps
            else ""
        )
        + "), "
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
