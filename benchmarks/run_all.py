"""Run every benchmark (``make bench``) and print one summary: figure, target, met or not.

Each benchmark runs as its own process (one failing does not stop the others) with the same
model set, writes ``benchmarks/results/<name>.json`` and its targets; this script collects
those into ``results/summary.json`` and prints issue 14's targets MET or MISSED (figures from
end_to_end, latency and baseline). Durations are chosen so the whole run stays near
20 minutes on a 2-core machine; the soak (10 minutes on its own) only runs with ``--soak``.
With ``--skab``, ``benchmarks/skab.py`` and ``benchmarks/skab_healthy.py`` (``--data
../shared/data/skab``) run at the end when that directory exists (``make skab`` runs them alone).

    python benchmarks/run_all.py [--models DIR] [--soak] [--quick] [--only inference,footprint]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_sets
import results
import seed_models

HERE = Path(__file__).resolve().parent
SKAB_DATA = Path("..") / "shared" / "data" / "skab"  # relative to the repository root


#: The stride-10 telemetry run: the same script as ``end_to_end``, its own results file.
#: 1,000 units (the agent's default ``ingest.max_units``), the rate raised by a shorter step.
STRIDE_RUN = "end_to_end_stride10"
STRIDE_STAGES = ("telemetry:1000:10000", "telemetry:1000:12500", "telemetry:1000:15000")
#: Results name -> script, where they differ.
SCRIPT_OF = {STRIDE_RUN: "end_to_end"}


def plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(results name, command-line arguments) of each benchmark, in running order."""
    quick = ["--quick"] if args.quick else []
    steps = [
        ("inference", [*quick, "--seconds", "1"]),
        ("ingest_ceiling", [*quick, "--seconds", "5"]),
        ("training_time", ["--rerun"] if args.rerun_training else []),
        ("end_to_end", [*quick, "--seconds", "8"]),
        # the documented lever when scoring is the limit: telemetry at models.stride 10
        (
            STRIDE_RUN,
            [*quick, "--seconds", "8", "--stride", "10", "--name", STRIDE_RUN]
            + ([] if args.quick else [a for r in STRIDE_STAGES for a in ("--stage", r)]),
        ),
        # profiled (py-spy, from the dev extra): a missed latency target comes with the
        # functions the agent spent its time in
        ("latency", [*quick, "--profile"]),
        ("cost_curve", [*quick, "--seconds", "8"]),
        ("baseline", [*quick, "--seconds", "20"]),
        (
            "footprint",
            [*quick, "--minutes", str(args.footprint_minutes), "--starts", "3"]
            + ([] if args.no_fresh_venv else ["--fresh-venv"]),
        ),
    ]
    if args.soak:
        steps.append(("soak", ["--minutes", str(args.soak_minutes)]))
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        steps = [s for s in steps if s[0] in wanted]
    return steps


def run_one(name: str, extra: list[str], models: Path, pin: bool) -> dict[str, Any]:
    script = SCRIPT_OF.get(name, name)
    cmd = [sys.executable, str(HERE / f"{script}.py"), *extra]
    if name != "ingest_ceiling":  # the only one without models
        cmd += ["--models", str(models)]
    pinnable = ("ingest_ceiling", "end_to_end", "latency", "cost_curve", "baseline", "footprint")
    if pin and script in (*pinnable, "soak"):
        cmd.append("--pin")
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    t0, started = time.monotonic(), time.time()
    proc = subprocess.run(cmd, cwd=results.REPO, check=False)
    seconds = time.monotonic() - t0
    result_file = results.RESULTS_DIR / f"{name}.json"
    targets: list[dict[str, Any]] = []
    fresh = result_file.is_file() and result_file.stat().st_mtime >= started - 1
    if fresh:
        targets = json.loads(result_file.read_text()).get("targets", [])
    return {
        "name": name,
        "exit_code": proc.returncode,
        "seconds": seconds,
        "result_file": str(result_file) if fresh else None,
        "targets": targets,
    }


#: Issue 14's targets: (label, results name, how to find the figure, op, limit, unit).
ISSUE14 = (
    ("telemetry readings/s, zero loss", "end_to_end", "summary.sustained_telemetry_readings_per_s",
     ">=", 80000, "readings/s"),
    ("telemetry readings/s at models.stride 10 (the lever; not every step scored)", STRIDE_RUN,
     "summary.sustained_telemetry_readings_per_s", ">=", 80000, "readings/s"),
    ("per-sensor msgs/s, zero loss", "end_to_end", "summary.sustained_sensor_msgs_per_s",
     ">=", 10000, "msgs/s"),
    ("p99 reading->score, burst (subscriber)", "latency",
     "target.p99 reading->score at a subscriber, burst (ms)", "<=", 20, "ms"),
    ("p99 reading->alert, burst (subscriber)", "latency",
     "target.p99 reading->alert at a subscriber, burst (ms)", "<=", 20, "ms"),
    ("p99 reading->score, 1 k msgs/s (subscriber)", "latency",
     "target.p99 reading->score at a subscriber, steady (ms)", "<=", 20, "ms"),
    ("p99 reading->alert, 1 k msgs/s (subscriber)", "latency",
     "target.p99 reading->alert at a subscriber, steady (ms)", "<=", 20, "ms"),
    ("end to end vs the seed design (x)", "baseline",
     "target.agent / seed design, windows/s end to end (x)", ">=", 200, "x"),
)  # fmt: skip


def issue14_targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 14's targets from this run's result files (not measured when a file is stale)."""
    docs = {
        r["name"]: json.loads(Path(r["result_file"]).read_text())
        for r in runs
        if r.get("result_file")
    }
    out = []
    for label, name, where, op, limit, unit in ISSUE14:
        kind, _, key = where.partition(".")
        doc = docs.get(name, {})
        if kind == "summary":
            value = doc.get("summary", {}).get(key)
        else:
            value = next((t["value"] for t in doc.get("targets", []) if t["figure"] == key), None)
        out.append({**results.target(label, value, op, limit, unit).to_dict(), "source": name})
    return out


def profile_lines(runs: list[dict[str, Any]], name: str, top: int = 5) -> list[str]:
    """The agent's top functions (py-spy self time) in the busiest profiled part of ``name``'s
    results: what explains a miss."""
    doc = next(
        (json.loads(Path(r["result_file"]).read_text()) for r in runs if r["name"] == name
         and r.get("result_file")),
        {},
    )  # fmt: skip
    parts = [*doc.get("patterns", []), *doc.get("stages", [])]
    profiles = [p["profile"] for p in parts if isinstance(p.get("profile"), dict) and p["profile"]]
    if not profiles:
        return []
    busiest = max(profiles, key=lambda p: p.get("samples", 0))
    shares = ", ".join(f"{fn} {pct:g} %" for fn, pct in busiest.get("self_percent", [])[:top])
    return [f"profile ({busiest.get('samples', 0)} samples, self time): {shares}"]


def run_skab(name: str) -> dict[str, Any] | None:
    """``skab`` (the labelled protocol) or ``skab_healthy`` (the anomaly-free recording)."""
    data = (results.REPO / SKAB_DATA).resolve()
    script = HERE / f"{name}.py"
    if not data.is_dir() or not script.is_file():
        print(f"\n=== {name}: skipped ({data} or {script.name} not found)", flush=True)
        return None
    cmd = [sys.executable, str(script), "--data", str(SKAB_DATA)]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=results.REPO, check=False)
    return {
        "name": name,
        "exit_code": proc.returncode,
        "seconds": time.monotonic() - t0,
        "result_file": str(results.RESULTS_DIR / f"{name}.json"),
        "targets": [],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, help="model set (default: models/ or a built one)")
    p.add_argument("--quick", action="store_true", help="smallest mode of every benchmark")
    p.add_argument("--soak", action="store_true", help="also run the soak")
    p.add_argument("--soak-minutes", type=float, default=10.0)
    p.add_argument("--footprint-minutes", type=float, default=3.0)
    p.add_argument("--rerun-training", action="store_true", help="re-time training (minutes)")
    p.add_argument("--pin", action="store_true", help="pin agents to a core of their own")
    p.add_argument("--skab", action="store_true", help="also run skab.py on ../shared/data/skab")
    p.add_argument(
        "--no-fresh-venv",
        action="store_true",
        help="footprint: skip installing the agent alone into a new venv (needs PyPI)",
    )
    p.add_argument("--only", help="comma list of benchmark names")
    args = p.parse_args(argv)

    t0 = time.monotonic()
    models = model_sets.resolve_models(args.models)
    seed_models.native_models(models)  # Keras/sklearn twins: built once, before anything is timed
    print(f"model set: {models}", flush=True)
    runs = [run_one(name, extra, models, args.pin) for name, extra in plan(args)]
    if args.skab and not args.only:
        for name in ("skab", "skab_healthy"):
            skab = run_skab(name)
            if skab is not None:
                runs.append(skab)
    total = time.monotonic() - t0

    rows = []
    for r in runs:
        if r["exit_code"] != 0:
            rows.append([r["name"], f"FAILED (exit {r['exit_code']})", "-", None])
        for t in r["targets"]:
            rows.append([r["name"], t["figure"], t["target"], t["met"], t["value"]])
    results.print_table(
        ["benchmark", "figure", "target", "met", "value"],
        [row + [None] * (5 - len(row)) for row in rows],
        f"Summary ({total / 60:.1f} min; 'NO' = missed, '-' = not measured)",
    )
    results.print_table(
        ["benchmark", "seconds", "exit"],
        [[r["name"], r["seconds"], r["exit_code"]] for r in runs],
        "Durations",
    )
    issue14 = issue14_targets(runs)
    print("\nIssue 14 targets")
    for t in issue14:
        verdict = {True: "MET   ", False: "MISSED", None: "n/a   "}[t["met"]]
        value = "not measured" if t["value"] is None else f"{t['value']:,.1f} {t['unit']}"
        print(f"  {verdict} {t['figure']}: {value} (target {t['target']}; {t['source']})")
        if t["met"] is False:
            for line in profile_lines(runs, t["source"]):
                print(f"           {line}")
    path = results.write_result(
        "summary",
        {"models": str(models), "total_seconds": total, "runs": runs, "issue14": issue14},
    )
    print(f"\nwrote {path}")
    return 0 if all(r["exit_code"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
