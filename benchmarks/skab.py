"""SKAB outlier detection through the product's own commands: ``edge-train train`` then
``edge-agent replay``, per file, pooled.

Protocol (SKAB's published outlier-detection leaderboard): for every experiment file
separately, train on its first 400 rows and judge the remaining rows; concatenate all
judged rows and labels and report F1, FAR (% of normal rows flagged) and MAR (% of
anomalous rows missed). Here that is, per file:

1. the first ``--fit-rows`` rows, exactly as they are in the file, are written to a CSV and
   trained on with the ``edge-train train`` entry point (no label column: the rows are taken
   as normal operation, as a user's export would be; thresholds from out-of-fold scores);
2. the *whole* file is replayed with the ``edge-agent replay`` entry point (a config that
   points at that model set) — ingest, alignment, ring buffer, features, ONNX scoring,
   the calibrated ensemble and the alarm state machine of the daemon;
3. replay lines after the fit rows are matched to the file's rows by timestamp; a row the
   agent did not score counts as "not flagged" (and is counted).

Both point decisions (the ``decision`` of each step) and alarm states (the anomaly alarm
active after on/off delays) are reported, per model and for the ensemble; and every alarm
of any kind (anomaly, sensor health, …) raised on a labelled-normal row after the fit rows,
counted by kind and per hour of normal rows, since a sensor-health alarm on a healthy pump
costs the operator as much as an anomaly one. One command line for every file; labels are
read only to score the result.

    python benchmarks/skab.py --data ../shared/data/skab      [--help for every option]

Writes ``benchmarks/results/skab.json``. The data is read in place and never copied into
the project (it is GPL-3.0); temporary files go to a temporary directory.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.cli import main as edge_agent_main  # noqa: E402
from edge_agent.pipeline.ingest import parse_table_timestamp  # noqa: E402
from training.cli import main as edge_train_main  # noqa: E402
from training.metrics import detection_metrics  # noqa: E402

#: The six sensors modelled (the two temperatures warm up slowly over every experiment:
#: a model fitted on 400 rows that judges levels flags the warm-up itself).
SENSORS = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Voltage",
    "Volume Flow RateRMS",
)
TIME_COLUMN = "datetime"
LABEL_COLUMN = "anomaly"
DETECTORS = ("iforest", "lstm_ae", "ensemble")

#: Published leaderboard, outlier detection, all 34 experiment files of SKAB v0.9.
LEADERBOARD: dict[str, dict[str, float]] = {
    "Conv-AE": {"f1": 0.78, "far_percent": 13.55, "mar_percent": 28.02},
    "LSTM-AE": {"f1": 0.74, "far_percent": 29.96, "mar_percent": 25.92},
    "Isolation forest": {"f1": 0.29, "far_percent": 2.56, "mar_percent": 82.89},
}
TARGETS = {"f1": (">=", 0.80), "far_percent": ("<=", 15.0), "mar_percent": ("<=", 25.0)}


@dataclass(frozen=True)
class Options:
    fit_rows: int
    window: int
    extra_train_args: tuple[str, ...]
    config: Path


def train_args(
    csv_path: Path, out: Path, opt: Options, exclude: tuple[str, ...] = ("changepoint",)
) -> list[str]:
    """The ``edge-train train`` command line for one file (the same for every file).

    ``exclude``: the labelled files' non-sensor column; the anomaly-free recording has none.
    """
    return [
        "train",
        "--config",
        str(opt.config),
        "--data",
        str(csv_path),
        "--out",
        str(out),
        "--window",
        str(opt.window),
        "--separator",
        ";",
        "--timestamp-column",
        TIME_COLUMN,
        "--label-column",
        "none",
        *(a for col in exclude for a in ("--exclude", col)),
        "--sensors",
        ",".join(SENSORS),
        "--no-report",
        "--threads",
        "1",
        *opt.extra_train_args,
    ]


def agent_config(
    models: Path, state: Path, plant: str = "skab", unit: str = "pump"
) -> dict[str, Any]:
    """The agent config ``edge-agent replay`` runs a recording with: one unit, quiet logs."""
    return {
        "agent_id": plant,
        "plant": plant,
        "state_dir": str(state),
        "units": [{"name": unit}],
        "models": {"dir": str(models), "expected_sensors": None},
        "metrics": {"enabled": False},
        "logging": {"level": "WARNING", "format": "json"},
    }


def read_file(path: Path) -> tuple[list[str], list[float], np.ndarray]:
    """Raw lines (header first), timestamps and labels of one SKAB file."""
    with path.open(encoding="utf-8") as f:
        lines = f.read().splitlines()
    reader = csv.reader(lines, delimiter=";")
    header = next(reader)
    t_col, y_col = header.index(TIME_COLUMN), header.index(LABEL_COLUMN)
    ts, labels = [], []
    for row in reader:
        t = parse_table_timestamp(row[t_col])
        if t is None:
            raise ValueError(f"{path}: bad timestamp {row[t_col]!r}")
        ts.append(t)
        labels.append(int(float(row[y_col])))
    return lines, ts, np.asarray(labels, dtype=np.int8)


def run_file(path: Path, opt: Options) -> dict[str, Any]:
    """Train on the first rows, replay the file, return per-row flags after the fit rows."""
    lines, ts, labels = read_file(path)
    with tempfile.TemporaryDirectory(prefix="skab-") as tmp:
        work = Path(tmp)
        fit_csv = work / "fit.csv"
        fit_csv.write_text("\n".join(lines[: opt.fit_rows + 1]) + "\n", encoding="utf-8")
        models = work / "models"
        t0 = time.perf_counter()
        rc = edge_train_main(train_args(fit_csv, models, opt))
        if rc != 0:
            raise RuntimeError(f"{path}: edge-train train exited {rc}")
        train_s = time.perf_counter() - t0
        cfg = work / "agent.yaml"
        cfg.write_text(yaml.safe_dump(agent_config(models, work / "state")), encoding="utf-8")
        out = work / "replay.jsonl"
        rc = edge_agent_main(
            [
                "replay",
                "--config",
                str(cfg),
                "--input",
                str(path),
                "--output",
                str(out),
                "--timestamp-column",
                TIME_COLUMN,
                "--separator",
                ";",
            ]
        )
        if rc != 0:
            raise RuntimeError(f"{path}: edge-agent replay exited {rc}")
        replayed = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    steps = {parse_table_timestamp(d["ts"]): d for d in replayed}
    judged = range(opt.fit_rows, len(ts))
    flags = {k: np.zeros(len(judged), dtype=bool) for k in DETECTORS}
    alarm = np.zeros(len(judged), dtype=bool)
    unscored = 0
    for i, row in enumerate(judged):
        d = steps.get(float(int(ts[row])))  # steps start on whole seconds
        if d is None or not d["scored"]:
            unscored += 1
            continue
        flags["ensemble"][i] = bool(d["decision"])
        for k in ("iforest", "lstm_ae"):
            flags[k][i] = bool(d["models"][k]["decision"])
        alarm[i] = bool(d["alarms"]["anomaly"])
    return {
        "episodes": labelled_episodes(replayed, ts, labels, opt.fit_rows),
        "file": f"{path.parent.name}/{path.name}",
        "labels": labels[opt.fit_rows :].tolist(),
        "flags": {k: v.tolist() for k, v in flags.items()},
        "alarm": alarm.tolist(),
        "unscored": unscored,
        "train_seconds": train_s,
    }


def alarm_episodes(steps: list[dict[str, Any]], judged_from: float) -> list[dict[str, Any]]:
    """Every alarm raised at or after ``judged_from``, with how long it stayed raised: what
    an operator would have seen, from the replay's steps (in order).

    An alarm still raised at the end of the recording has ``cleared: null`` and its
    duration up to the last step.
    """
    open_: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    last = judged_from
    for d in steps:
        t = parse_table_timestamp(d["ts"])
        assert t is not None
        last = t
        for alert in d["alerts"]:
            key = alert["alarm"]
            if alert["state"] == "raised" and t >= judged_from:
                ep = {
                    "alarm": key,
                    "kind": alert["kind"],
                    "raised": d["ts"],
                    "cleared": None,
                    "seconds": None,
                    "named": [s["sensor"] for s in alert.get("top_sensors") or []],
                    "outside_envelope": [s["sensor"] for s in alert.get("outside_envelope") or []],
                    "message": alert["message"],
                    "_t": t,
                }
                open_[key] = ep
                out.append(ep)
            elif alert["state"] == "cleared" and key in open_:
                ep = open_.pop(key)
                ep["cleared"] = d["ts"]
                ep["seconds"] = t - ep["_t"]
    for ep in open_.values():
        ep["seconds"] = last - ep["_t"]
    for ep in out:
        del ep["_t"]
    return out


def labelled_episodes(
    replayed: list[dict[str, Any]], ts: list[float], labels: np.ndarray, fit_rows: int
) -> list[dict[str, Any]]:
    """Every alarm raised after the fit rows, marked with the label of the row it was raised
    on (``on_normal``): an alarm raised on a normal row is one an operator would have
    checked for nothing, whatever its kind (the point figures only judge the anomaly one)."""
    row_of = {int(t): i for i, t in enumerate(ts)}
    anomalous = np.flatnonzero(labels)
    out = []
    for ep in alarm_episodes(replayed, ts[fit_rows]):
        t = parse_table_timestamp(ep["raised"])
        row = row_of.get(int(t)) if t is not None else None
        on_normal = row is not None and labels[row] == 0
        phase = None
        if on_normal and row is not None:  # before the file's fault, after it, or between
            phase = (
                "before"
                if not anomalous.size or row < anomalous[0]
                else "after"
                if row > anomalous[-1]
                else "between"
            )
        out.append({**ep, "on_normal": on_normal, "phase": phase})
    return out


def on_normal_rows(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Alarms raised on labelled-normal judged rows, by kind, and per hour of such rows."""
    normal_hours = sum(r["labels"].count(0) for r in results) / 3600  # one row a second
    by_kind: dict[str, int] = {}
    by_phase: dict[str, int] = {}
    for r in results:
        for ep in r["episodes"]:
            if ep["on_normal"]:
                by_kind[ep["kind"]] = by_kind.get(ep["kind"], 0) + 1
                by_phase[ep["phase"]] = by_phase.get(ep["phase"], 0) + 1
    return {
        "normal_hours": normal_hours,
        "raised": by_kind,
        "raised_relative_to_the_fault": by_phase,
        "per_hour": {k: v / normal_hours for k, v in by_kind.items()} if normal_hours else {},
    }


def pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    y = np.concatenate([np.asarray(r["labels"], dtype=np.int8) for r in results])
    point = {
        k: detection_metrics(y, np.concatenate([r["flags"][k] for r in results]), 1.0)
        for k in DETECTORS
    }
    alarm = detection_metrics(y, np.concatenate([r["alarm"] for r in results]), 1.0)
    return {
        "point": point,
        "alarm": {"ensemble": alarm},
        "rows": int(y.size),
        "alarms_on_normal_rows": on_normal_rows(results),
    }


def met(value: float | None, rule: tuple[str, float]) -> bool:
    if value is None:
        return False
    op, bound = rule
    return value >= bound if op == ">=" else value <= bound


def table(summary: dict[str, Any]) -> str:
    rows = [("detector", "F1", "FAR %", "MAR %")]
    for k in DETECTORS:
        m = summary["point"][k]
        rows.append(
            (
                f"{k} (points)",
                f"{m['f1']:.3f}",
                f"{m['far_percent']:.2f}",
                f"{m['mar_percent']:.2f}",
            )
        )
    m = summary["alarm"]["ensemble"]
    rows.append(
        (
            "ensemble (alarm state)",
            f"{m['f1']:.3f}",
            f"{m['far_percent']:.2f}",
            f"{m['mar_percent']:.2f}",
        )
    )
    for name, m in LEADERBOARD.items():
        rows.append(
            (
                f"{name} (leaderboard)",
                f"{m['f1']:.2f}",
                f"{m['far_percent']:.2f}",
                f"{m['mar_percent']:.2f}",
            )
        )
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) for r in rows)


def files_under(data: Path, subsets: list[str]) -> list[Path]:
    out: list[Path] = []
    for sub in subsets:
        found = sorted((data / sub).glob("*.csv"), key=lambda p: (len(p.stem), p.stem))
        if not found:
            raise SystemExit(f"no CSV files under {data / sub}")
        out += found
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "skab")
    p.add_argument("--subsets", default="valve1", help="comma-separated folders under --data")
    p.add_argument("--fit-rows", type=int, default=400)
    p.add_argument("--window", type=int, default=30)
    p.add_argument("--config", type=Path, default=REPO / "config" / "training.yaml")
    p.add_argument(
        "--train-arg",
        action="append",
        default=[],
        help="extra edge-train train argument (repeat), e.g. --train-arg=--epochs=5",
    )
    p.add_argument("--jobs", type=int, default=2, help="files trained in parallel")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "skab.json")
    args = p.parse_args(argv)
    opt = Options(args.fit_rows, args.window, tuple(args.train_arg), args.config)
    files = files_under(args.data, args.subsets.split(","))
    t0 = time.perf_counter()
    if args.jobs <= 1:
        results = [run_file(f, opt) for f in files]
    else:  # spawn: forking a process that already runs TensorFlow's threads can deadlock
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=spawn) as pool:
            results = list(pool.map(run_file, files, [opt] * len(files)))
    summary = pooled(results)
    targets = {k: met(summary["point"]["ensemble"][k], rule) for k, rule in TARGETS.items()}
    print(table(summary))
    print(
        "targets (ensemble, points): "
        + ", ".join(
            f"{k} {r[0]} {r[1]}: {'met' if targets[k] else 'MISSED'}" for k, r in TARGETS.items()
        )
    )
    normal = summary["alarms_on_normal_rows"]
    print(
        f"alarms raised on normal rows ({normal['normal_hours']:.2f} h of them): "
        + (", ".join(f"{k} {v}" for k, v in sorted(normal["raised"].items())) or "none")
        + " ("
        + ", ".join(
            f"{v} {k} the file's fault"
            for k, v in sorted(normal["raised_relative_to_the_fault"].items())
        )
        + ")"
    )
    unscored = sum(r["unscored"] for r in results)
    print(
        f"{len(files)} files, {summary['rows']} judged rows, {unscored} not scored, "
        f"{time.perf_counter() - t0:.0f}s"
    )
    per_file = []
    for r in results:
        y = np.asarray(r["labels"], dtype=np.int8)
        m = detection_metrics(y, np.asarray(r["flags"]["ensemble"]), 1.0)
        per_file.append(
            {
                "file": r["file"],
                "rows": int(y.size),
                "unscored": r["unscored"],
                "train_seconds": round(r["train_seconds"], 1),
                **{k: m[k] for k in ("f1", "far_percent", "mar_percent")},
                "alarms_on_normal_rows": [
                    {k: ep[k] for k in ("alarm", "raised", "phase", "seconds", "named", "message")}
                    for ep in r["episodes"]
                    if ep["on_normal"]
                ],
            }
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "protocol": {
                    "fit_rows": args.fit_rows,
                    "train_command": "edge-train "
                    + " ".join(train_args(Path("FIT.csv"), Path("MODELS"), opt)),
                    "replay_command": "edge-agent replay --config AGENT.yaml --input FILE.csv "
                    "--output OUT.jsonl --timestamp-column datetime --separator ';'",
                    "files": [r["file"] for r in results],
                },
                "pooled": summary,
                "targets_met": targets,
                "leaderboard": LEADERBOARD,
                "per_file": per_file,
                "unscored_rows": unscored,
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
