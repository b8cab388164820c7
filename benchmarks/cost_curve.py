"""The cost curve: throughput, p99 latency, CPU and RSS of the agent as the work grows.

Every point is one end-to-end stage (stage.py: a fresh Mosquitto and ``edge-agent run``, the
load generator in its own process, zero-loss accounting), telemetry messages (one per unit
per step):

* **units** 10 → 100 → 1 000 → 10 000 at the plant's pace: one message per unit per second,
  the model's step (offered msgs/s = units), with the shipped models. Windows are filled
  from history first (``--backfill``), so a point needs seconds, not a minute, of warm-up;
  10 000 units would need 590 000 messages of history, more than a short run can feed
  the agent, so that point measures intake alone (windows never fill: no scores);
* **max throughput** at 10 and 100 units: 5 000 msgs/s offered, more than the agent takes;
  the processed rate is its ceiling at that many units (the window is measured 10 s after
  the history went out: the agent never catches up with such a load);
* **sensors per unit** 8 → 32 → 128 at 100 units × 10 steps/s (1 000 msgs/s), each with a
  model set of that width trained by the product's ``edge-train train``
  (model_sets.wide_model_set: the default model sizes, training cut short; cached).

Memory per unit is the slope of RSS over the kept-up unit points (least squares). Writes
``results/cost_curve.json``, ``results/cost_curve.png`` (matplotlib, when installed) and
prints a markdown table.

    python benchmarks/cost_curve.py [--models DIR] [--seconds 10] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_sets
import procstat
import results
from stage import run_stage


@dataclass(frozen=True)
class Point:
    series: str  # "units", "max", "sensors"
    units: int
    rate: float
    width: int = 8
    backfill: bool = True


DEFAULT_POINTS = (
    Point("units", 10, 10.0),
    Point("units", 100, 100.0),
    Point("units", 1000, 1000.0),
    Point("units", 10000, 10000.0, backfill=False),
    Point("max", 10, 5000.0),
    Point("max", 100, 5000.0),
    Point("sensors", 100, 1000.0, 8),
    Point("sensors", 100, 1000.0, 32),
    Point("sensors", 100, 1000.0, 128),
)
QUICK_POINTS = (
    Point("units", 2, 20.0),
    Point("units", 20, 200.0),
    Point("sensors", 4, 40.0, 8),
    Point("sensors", 4, 40.0, 16),
)
NOTES = {
    "cold": "intake only: windows not full in the run",
    "max": "saturated: processed = intake ceiling, scored/s = scoring's; latency = queueing",
}
#: Intake-only points (no backfill): measured after this long at load.
COLD_WARMUP_SECONDS = 3.0


def models_for(point: Point, shipped: Path, tiny: bool) -> Path:
    """The shipped set for 8 sensors on the units/max series; a trained set of the width else."""
    if point.series != "sensors":
        return shipped
    if tiny:  # smoke test: TensorFlow-free, any width (model_sets.build_tiny_model_set)
        out = model_sets.cache_dir() / f"models-tiny-wide{point.width}"
        if not (out / "manifest.json").is_file():
            model_sets.build_tiny_model_set(out, trees=10, width=point.width)
        return out
    return model_sets.wide_model_set(point.width)


def measure(
    point: Point, models: Path, seconds: float, work: Path, profile: bool = False
) -> dict[str, Any]:
    r = run_stage(
        models, "telemetry", point.units, point.rate, seconds, work,
        width=point.width, backfill=point.backfill,
        warmup_seconds=None if point.backfill else COLD_WARMUP_SECONDS,
        drain_timeout=5.0 if point.series == "max" or not point.backfill else 15.0,
        catch_up_timeout=10.0 if point.series == "max" else 90.0,
        profile=work / "profile.txt" if profile else None,
        agent_extra={"ingest.max_units": max(1000, 2 * point.units),
                     "models.expected_sensors": None},
    )  # fmt: skip
    return {
        "series": point.series,
        "units": point.units,
        "sensors": point.width,
        "offered_msgs_per_s": point.rate,
        "step_seconds": r.step_seconds,
        "processed_msgs_per_s": r.processed_msgs_per_s,
        "processed_readings_per_s": r.processed_msgs_per_s * point.width,
        "scored_per_s": r.scored_per_s,
        "kept_up": r.kept_up,
        "p99_ms": r.score_latency_p99_ms,
        "agent_p99_ms": None
        if r.agent_reading_to_score_p99_s is None
        else r.agent_reading_to_score_p99_s * 1000,
        "cpu_percent": r.agent_cpu_percent,
        "rss_mb": r.agent_rss_mb,
        "catchup_seconds": r.catchup_seconds,
        "why_not": r.why_not,
        "note": NOTES.get(point.series if point.backfill else "cold", ""),
        "stage": r.to_dict(),
    }


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (None with fewer than two points)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def findings(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The slopes the README states: memory per unit, CPU per 1 k msgs/s, cost per sensor."""
    units = [r for r in rows if r["series"] == "units" and r["rss_mb"] is not None]
    warm = [r for r in units if r["kept_up"]]
    rss_per_unit = slope([r["units"] for r in warm], [r["rss_mb"] for r in warm])
    rss_per_unit_all = slope([r["units"] for r in units], [r["rss_mb"] for r in units])
    cpu_rows = [r for r in units if r["kept_up"] and r["cpu_percent"] is not None]
    cpu_per_k = slope(
        [r["processed_msgs_per_s"] / 1000 for r in cpu_rows], [r["cpu_percent"] for r in cpu_rows]
    )
    sens = [r for r in rows if r["series"] == "sensors" and r["cpu_percent"] is not None]
    cpu_per_msg_by_width = {
        r["sensors"]: (r["cpu_percent"] * 10.0 / r["processed_msgs_per_s"])
        if r["processed_msgs_per_s"]
        else None
        for r in sens
    }  # CPU-ms per message (cpu % of one core / msgs per s * 10)
    return {
        "rss_mb_per_1000_units_kept_up": None if rss_per_unit is None else rss_per_unit * 1000,
        "rss_kb_per_unit_kept_up": None if rss_per_unit is None else rss_per_unit * 1024,
        "rss_kb_per_unit_all_points": None if rss_per_unit_all is None else rss_per_unit_all * 1024,
        "cpu_percent_per_1k_msgs_per_s": cpu_per_k,
        "cpu_ms_per_message_by_sensors": cpu_per_msg_by_width,
        "max_processed_msgs_per_s_by_units": {
            r["units"]: r["processed_msgs_per_s"] for r in rows if r["series"] == "max"
        },
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| series | units | sensors | step s | offered msgs/s | processed msgs/s | readings/s "
        "| scored/s | kept up | p99 ms | agent p99 ms | CPU % | RSS MB | note |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"
    )

    def f(v: Any, fmt: str = "{:,.0f}") -> str:
        return "-" if v is None else fmt.format(v)

    lines = [
        f"| {r['series']} | {r['units']:,} | {r['sensors']} | {r['step_seconds']:g} "
        f"| {f(r['offered_msgs_per_s'])} | {f(r['processed_msgs_per_s'])} "
        f"| {f(r['processed_readings_per_s'])} | {f(r['scored_per_s'])} "
        f"| {'yes' if r['kept_up'] else 'no'} "
        f"| {f(r['p99_ms'], '{:.1f}')} | {f(r['agent_p99_ms'], '{:.1f}')} "
        f"| {f(r['cpu_percent'], '{:.0f}')} | {f(r['rss_mb'], '{:.0f}')} | {r['note']} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Units and sensors per unit against throughput, p99, CPU and RSS (one PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib not installed: no plot)")
        return None
    rows_of = [
        ("units", "units", ("units", "max"), ("processed_msgs_per_s", "processed msgs/s")),
        ("sensors", "sensors per unit", ("sensors",), ("processed_readings_per_s", "readings/s")),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), constrained_layout=True)
    for row_i, (xkey, xlabel, series, first) in enumerate(rows_of):
        panels = [
            first,
            ("p99_ms", "p99 reading→score (ms)"),
            ("cpu_percent", "agent CPU (% of a core)"),
            ("rss_mb", "agent RSS (MB)"),
        ]
        for col, (ykey, ylabel) in enumerate(panels):
            ax = axes[row_i][col]
            for name in series:
                if ykey == "p99_ms" and name == "max":
                    continue  # a saturated agent's latency is its queue, off any scale
                pts = [r for r in rows if r["series"] == name and r[ykey] is not None]
                if not pts:
                    continue
                label = {"units": "1 msg/unit/s", "max": "5 k msgs/s offered"}.get(
                    name, "100 units, 1 k msgs/s"
                )
                ax.plot([r[xkey] for r in pts], [r[ykey] for r in pts], "o-", label=label)
            ax.set_xscale("log", base=2 if xkey == "sensors" else 10)
            ax.set_ylim(bottom=0)
            ax.ticklabel_format(axis="y", useOffset=False, style="plain")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            if col == 0:
                ax.legend(fontsize=8)
    fig.suptitle("edge-agent cost curve (telemetry, real Mosquitto, this machine)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.pin:
        os.environ["EDGE_BENCH_PIN"] = "1"
    shipped = model_sets.resolve_models(args.models, tiny=args.tiny)
    points = QUICK_POINTS if args.quick else DEFAULT_POINTS
    if args.series:
        points = tuple(p for p in points if p.series in args.series)
    if args.units:
        points = tuple(p for p in points if p.units in args.units)
    seconds = min(args.seconds, 3.0) if args.quick else args.seconds
    print(f"model set: {shipped}; {len(points)} points of {seconds:g}s")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-curve-") as tmp:
        for i, point in enumerate(points):
            models = models_for(point, shipped, args.tiny)
            row = measure(point, models, seconds, Path(tmp) / f"point{i}", args.profile)
            rows.append(row)
            print(
                f"  {point.series:7s} {point.units:6,d} units x {point.width:3d} sensors, "
                f"{point.rate:7,.0f}/s offered: {row['processed_msgs_per_s']:8,.0f} msgs/s, "
                f"cpu {row['cpu_percent'] or 0:5.1f}%, rss {row['rss_mb'] or 0:5.0f} MB, "
                f"p99 {row['p99_ms'] or float('nan'):7.1f} ms, kept up "
                f"{'yes' if row['kept_up'] else 'no'} {row['note']}",
                flush=True,
            )
    table = markdown(rows)
    print("\nCost curve (markdown)\n\n" + table + "\n")
    found = findings(rows)
    results.print_table(["finding", "value"], [[k, v] for k, v in found.items()], "Slopes")
    png = None if args.no_write else plot(rows, results.RESULTS_DIR / f"{args.name}.png")
    result = {
        "models": str(shipped),
        "settings": {"seconds": seconds, "mode": "telemetry", "cold_warmup_s": COLD_WARMUP_SECONDS},
        "points": rows,
        "findings": found,
        "markdown": table,
        "plot": str(png) if png else None,
        "agent_cpus": sorted(procstat.cpu_split()[0] or []),
    }
    if not args.no_write:
        print(f"wrote {results.write_result(args.name, result)}" + (f" and {png}" if png else ""))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, help="8-sensor model set (default: shipped)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    p.add_argument("--series", action="append", choices=["units", "max", "sensors"])
    p.add_argument("--units", type=int, action="append", help="only points of these units")
    p.add_argument("--profile", action="store_true", help="py-spy each point (if installed)")
    results.add_run_options(p, "cost_curve", "tiny sizes, 3 s per point")
    return p


def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
