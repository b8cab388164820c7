"""Training time of the shipped model-set configuration: Isolation Forest and LSTM autoencoder.

By default reads the timings ``make models`` recorded in the model set's manifest
(``metrics.train_seconds`` and ``metrics.timings_seconds``). ``--rerun`` trains again with
``config/training.yaml`` (simulated data of the configured size, the configured threads) into
a temporary directory through the same pipeline and times it here; ``--rerun-iforest``
re-times only the Isolation Forest fit (seconds, not minutes).

    python benchmarks/training_time.py [--models DIR] [--rerun | --rerun-iforest]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_sets
import results

TRAINING_CONFIG = results.REPO / "config" / "training.yaml"


def recorded(models: Path) -> dict[str, Any]:
    man = model_sets.load_manifest_dict(models)
    metrics = man.get("metrics", {})
    train = metrics.get("train_seconds", {})
    lstm = man["models"].get("lstm_ae", {}).get("params", {})
    return {
        "source": f"{models}/manifest.json",
        "model_set_version": man.get("model_set_version"),
        "iforest_seconds": train.get("iforest"),
        "lstm_ae_seconds": train.get("lstm_ae"),
        "timings_seconds": metrics.get("timings_seconds", {}),
        "lstm_epochs_run": lstm.get("epochs_run"),
        "lstm_max_train_windows": lstm.get("max_train_windows"),
        "iforest_params": man["models"].get("iforest", {}).get("params", {}),
        "threads": None,  # the manifest does not record it; config/training.yaml does
    }


def _config(overrides: dict[str, Any] | None = None) -> Any:
    from training.config import load_config

    path = TRAINING_CONFIG if TRAINING_CONFIG.is_file() else None
    return load_config(path, overrides or {})


def rerun_all(work: Path) -> dict[str, Any]:
    """``make models`` in a temporary directory: generate, then train (report off)."""
    from edge_agent.tools.simulator import generate_dataset
    from training.pipeline import train

    cfg = _config()
    csv = work / "simulated.csv"
    sim = cfg.simulator
    generate_dataset(sim.steps, sim.events, seed=sim.seed, day_seconds=sim.day_seconds).to_csv(csv)
    cfg = _config(
        {
            "data.path": str(csv),
            "output_dir": str(work / "models"),
            "report": False,
            "tracking.enabled": False,
        }
    )
    t0 = time.perf_counter()
    result = train(cfg, progress=lambda line: print(f"  {line}", flush=True))
    return {
        "source": "rerun (training.pipeline.train, config/training.yaml)",
        "iforest_seconds": result.timings.get("iforest_fit"),
        "lstm_ae_seconds": result.timings.get("lstm_ae_fit"),
        "timings_seconds": dict(result.timings),
        "total_seconds": time.perf_counter() - t0,
        "lstm_epochs_run": len(result.history["loss"]),
        "threads": cfg.threads,
        "steps": sim.steps,
    }


def rerun_iforest() -> dict[str, Any]:
    """Only the Isolation Forest fit, on the configured simulated data size."""
    import numpy as np

    from edge_agent.pipeline.features import compute_series_features, default_feature_spec
    from edge_agent.tools.simulator import generate_dataset
    from training.iforest import fit_iforest

    cfg = _config()
    sim = cfg.simulator
    # Normal operation only, every row fitted: what `edge-train train` does with unlabelled data.
    data = generate_dataset(sim.steps, 0, seed=sim.seed, day_seconds=sim.day_seconds)
    values = np.asarray(data.values, dtype=np.float32)
    spec = default_feature_spec(data.sensor_names, cfg.rolling)
    feats = compute_series_features(values, spec)
    t0 = time.perf_counter()
    fit_iforest(
        feats,
        n_estimators=cfg.iforest.n_estimators,
        max_samples=cfg.iforest.max_samples,
        contamination=cfg.iforest.contamination,
        seed=cfg.seed,
        n_jobs=cfg.threads,
    )
    return {
        "source": "rerun (fit_iforest only, config/training.yaml)",
        "iforest_seconds": time.perf_counter() - t0,
        "lstm_ae_seconds": None,
        "threads": cfg.threads,
        "rows": len(feats),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = None
    if not (args.rerun or args.rerun_iforest):
        models = model_sets.resolve_models(args.models, tiny=args.tiny)
        fig = recorded(models)
    elif args.rerun:
        with tempfile.TemporaryDirectory(prefix="edge-bench-train-") as tmp:
            fig = rerun_all(Path(tmp))
    else:
        fig = rerun_iforest()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    targets = [
        results.target("IF training (s)", fig.get("iforest_seconds"), "<=", 30, "s"),
        results.target("LSTM training (s)", fig.get("lstm_ae_seconds"), "<=", 300, "s"),
    ]
    results.print_table(
        ["figure", "seconds"],
        [
            ["Isolation Forest fit", fig.get("iforest_seconds")],
            ["LSTM autoencoder fit", fig.get("lstm_ae_seconds")],
            *[[f"  phase {k}", v] for k, v in fig.get("timings_seconds", {}).items()],
        ],
        f"Training time ({fig['source']}; machine has {cores} cores)",
    )
    results.print_table(
        ["figure", "value", "target", "met"],
        [[t.figure, t.value, t.target, t.met] for t in targets],
        "Targets",
    )
    result = {
        "figures": fig,
        "cores": cores,
        "targets": [t.to_dict() for t in targets],
        "note": "targets are for 2 cores; the figures were taken on this machine",
    }
    if not args.no_write:
        print(f"\nwrote {results.write_result(args.name, result)}")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rerun", action="store_true", help="train again (minutes)")
    g.add_argument("--rerun-iforest", action="store_true", help="re-time the forest only")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--name", default="training_time")
    p.add_argument("--no-write", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
