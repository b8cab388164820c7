"""Alarms on a healthy pump: SKAB's anomaly-free recording through the product's commands.

SKAB's outlier protocol (``skab.py``) judges experiments that each hold one valve fault; it
never asks what an operator would see on a pump with nothing wrong. SKAB ships one such
recording, ``anomaly-free/anomaly-free.csv`` (about 2 h 46 min at one row a second, no
labels). Protocol, fixed before it was first run (2026-12-06) and not tuned since:

* two fits, each trained with ``skab.py``'s ``edge-train train`` command line (the same
  sensors, window and options; no ``--exclude changepoint``: this file has no such column):
  ``400`` — the first 400 rows, SKAB's fit length — and ``half`` — the first half of the rows;
* the whole file replayed with ``edge-agent replay``; every step after the fit rows is judged.

Reported per fit: the share of judged steps each model and the ensemble flag (the training
config states 0.5 % for normal data), and every alarm an operator would see after the fit
rows — anomaly alarm episodes and sensor-health alarms, per hour of judged time, each with
its start, duration, and the sensors its alert named. Nothing here is a threshold or a
target to tune to: the recording is one pump on one afternoon.

    python benchmarks/skab_healthy.py --data ../shared/data/skab      [--help]

Writes ``benchmarks/results/skab_healthy.json``. The data is read in place (GPL-3.0, never
copied into the project).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import skab  # noqa: E402

from edge_agent.cli import main as edge_agent_main  # noqa: E402
from edge_agent.pipeline.ingest import parse_table_timestamp  # noqa: E402
from training.cli import main as edge_train_main  # noqa: E402

RECORDING = Path("anomaly-free") / "anomaly-free.csv"
STATED_POINT_PERCENT = 0.5  # config/training.yaml: calibration.quantile 0.995


def fit_rows_for(fit: str, rows: int) -> int:
    """``400`` → 400 rows; ``half`` → half of the file's rows."""
    return rows // 2 if fit == "half" else int(fit)


def run_fit(data: Path, fit: str, opt: skab.Options) -> dict[str, Any]:
    """Train on the first rows of the recording, replay all of it, judge what follows."""
    path = data / RECORDING
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = len(lines) - 1
    fit_rows = fit_rows_for(fit, rows)
    judged_from = parse_table_timestamp(lines[fit_rows + 1].split(";")[0])
    if judged_from is None:
        raise ValueError(f"{path}: bad timestamp on row {fit_rows + 1}")
    with tempfile.TemporaryDirectory(prefix="skab-healthy-") as tmp:
        work = Path(tmp)
        fit_csv = work / "fit.csv"
        fit_csv.write_text("\n".join(lines[: fit_rows + 1]) + "\n", encoding="utf-8")
        models = work / "models"
        t0 = time.perf_counter()
        rc = edge_train_main(skab.train_args(fit_csv, models, opt, exclude=()))
        if rc != 0:
            raise RuntimeError(f"{path}: edge-train train exited {rc}")
        train_s = time.perf_counter() - t0
        cfg = work / "agent.yaml"
        cfg.write_text(yaml.safe_dump(skab.agent_config(models, work / "state")), encoding="utf-8")
        out = work / "replay.jsonl"
        rc = edge_agent_main(
            [
                "replay", "--config", str(cfg), "--input", str(path), "--output", str(out),
                "--timestamp-column", skab.TIME_COLUMN, "--separator", ";",
            ]
        )  # fmt: skip
        if rc != 0:
            raise RuntimeError(f"{path}: edge-agent replay exited {rc}")
        steps = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    judged = [d for d in steps if (parse_table_timestamp(d["ts"]) or 0.0) >= judged_from]
    scored = [d for d in judged if d["scored"]]
    hours = len(judged) * 1.0 / 3600  # replay steps are one second apart
    flagged = {
        k: float(np.mean([bool(d["models"][k]["decision"]) for d in scored]))
        for k in ("iforest", "lstm_ae")
    }
    flagged["ensemble"] = float(np.mean([bool(d["decision"]) for d in scored]))
    in_alarm = float(np.mean([bool(d["alarms"]["anomaly"]) for d in scored]))
    eps = skab.alarm_episodes(steps, judged_from)
    by_kind: dict[str, int] = {}
    for ep in eps:
        by_kind[ep["kind"]] = by_kind.get(ep["kind"], 0) + 1
    return {
        "fit": fit,
        "fit_rows": fit_rows,
        "rows": rows,
        "judged_steps": len(judged),
        "scored_steps": len(scored),
        "judged_hours": hours,
        "flagged_percent": {k: 100 * v for k, v in flagged.items()},
        "anomaly_alarm_active_percent": 100 * in_alarm,
        "alarms_raised": by_kind,
        "alarms_per_hour": {k: v / hours for k, v in by_kind.items()},
        "episodes": eps,
        "train_seconds": train_s,
    }


def describe(r: dict[str, Any]) -> str:
    f = r["flagged_percent"]
    lines = [
        f"fit {r['fit']} ({r['fit_rows']} rows): judged {r['judged_hours']:.2f} h "
        f"({r['scored_steps']} of {r['judged_steps']} steps scored); flagged: ensemble "
        f"{f['ensemble']:.2f} %, iforest {f['iforest']:.2f} %, lstm_ae {f['lstm_ae']:.2f} % "
        f"(stated {STATED_POINT_PERCENT} %); anomaly alarm active "
        f"{r['anomaly_alarm_active_percent']:.2f} % of steps",
        "  alarms raised: "
        + (
            ", ".join(
                f"{k} {n} ({r['alarms_per_hour'][k]:.2f}/h)" for k, n in r["alarms_raised"].items()
            )
            or "none"
        ),
    ]
    for ep in r["episodes"]:
        secs = f"{ep['seconds']:.0f} s" + (
            " (still raised at the end)" if ep["cleared"] is None else ""
        )
        lines.append(
            f"    {ep['raised'][11:19]} {ep['alarm']} {secs}; named {', '.join(ep['named']) or '-'}"
            + (
                f"; outside envelope {', '.join(ep['outside_envelope'])}"
                * bool(ep["outside_envelope"])
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "skab")
    p.add_argument("--fits", default="400,half", help="comma-separated: a row count or 'half'")
    p.add_argument("--window", type=int, default=30)
    p.add_argument("--config", type=Path, default=REPO / "config" / "training.yaml")
    p.add_argument("--train-arg", action="append", default=[], help="as in skab.py")
    p.add_argument("--jobs", type=int, default=2, help="fits trained in parallel")
    p.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "skab_healthy.json"
    )
    args = p.parse_args(argv)
    if not (args.data / RECORDING).is_file():
        raise SystemExit(f"no {RECORDING} under {args.data}")
    fits = args.fits.split(",")
    for fit in fits:
        if fit != "half" and not fit.isdigit():
            raise SystemExit(f"--fits: {fit!r} is neither a row count nor 'half'")
    opt = skab.Options(0, args.window, tuple(args.train_arg), args.config)
    t0 = time.perf_counter()
    if args.jobs <= 1:
        results = [run_fit(args.data, fit, opt) for fit in fits]
    else:  # spawn: as in skab.py, TensorFlow's threads and fork do not mix
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=spawn) as pool:
            results = list(pool.map(run_fit, [args.data] * len(fits), fits, [opt] * len(fits)))
    for r in results:
        print(describe(r))
    print(f"{time.perf_counter() - t0:.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "protocol": {
                    "recording": str(RECORDING),
                    "train_command": "edge-train "
                    + " ".join(skab.train_args(Path("FIT.csv"), Path("MODELS"), opt, exclude=())),
                    "replay_command": "edge-agent replay --config AGENT.yaml --input FILE.csv "
                    "--output OUT.jsonl --timestamp-column datetime --separator ';'",
                    "stated_point_percent": STATED_POINT_PERCENT,
                },
                "fits": results,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
