"""End to end: the real ``edge-agent run`` process against a real Mosquitto, at stepped rates.

For each stage (mode, units, offered msgs/s) a fresh broker and a fresh agent start; the
agent gets one core of its own when the machine has two or more. ``loadgen.py`` publishes
in a separate process; a raw-socket subscriber in this process counts the scores and alerts
the agent publishes and times them. The agent's step period is set (``align.step_seconds``)
so each unit publishes ``rate / units`` messages per second; the models do not know time.

Accounting (zero loss, stage.py): every message sent counted by the agent, every step
accounted for, every scored step's score received, drained within a few seconds of the
end; a stage that does so *keeps up*, and the sustained rate is the highest such stage.

Latency: the load generator stamps each step with its nominal publish time (see
loadgen.py), so reading→score = score arrival at the subscriber − that time (exact,
per score), next to the agent's own ``edge_agent_reading_to_score_seconds`` histogram
(arrival of the step's last reading → score, bucket bounds).

    python benchmarks/end_to_end.py [--models DIR] [--seconds 10] [--quick] [--stride N]
        [--stage telemetry:500:10000 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_sets
import procstat
import results
from stage import StageResult, run_stage

HERE = Path(__file__).resolve().parent

#: (mode, units, offered msgs/s); per mode the stages run in order and stop after a miss.
#: Steps are 20-50 ms per unit, so a 10 s stage has 200+ steps per unit after the warm-up.
DEFAULT_STAGES: tuple[tuple[str, int, int], ...] = (
    ("sensors", 1, 400),
    ("sensors", 6, 1000),
    ("sensors", 25, 5000),
    ("sensors", 38, 7500),
    ("sensors", 50, 10000),
    ("sensors", 75, 15000),
    ("sensors", 100, 20000),
    ("telemetry", 50, 1000),
    ("telemetry", 75, 1500),
    ("telemetry", 100, 2000),
    ("telemetry", 150, 3000),
    ("telemetry", 200, 4000),
    ("telemetry", 200, 5000),
    ("telemetry", 500, 10000),
    ("telemetry", 500, 15000),
    ("telemetry", 500, 20000),
)
QUICK_STAGES: tuple[tuple[str, int, int], ...] = (("sensors", 4, 1000),)


# ------------------------------------------------------------------------------ main


def parse_stage(text: str) -> tuple[str, int, int]:
    mode, units, rate = text.split(":")
    if mode not in ("sensors", "telemetry"):
        raise argparse.ArgumentTypeError("stage mode must be sensors or telemetry")
    return mode, int(units), int(rate)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.pin:
        os.environ["EDGE_BENCH_PIN"] = "1"
    models = model_sets.resolve_models(args.models, tiny=args.tiny)
    stages = list(args.stage or (QUICK_STAGES if args.quick else DEFAULT_STAGES))
    seconds = min(args.seconds, 2.0) if args.quick else args.seconds
    print(
        f"model set: {models}; {len(stages)} stages of {seconds:g}s; agent pinned to "
        f"{procstat.cpu_split()[0] or 'all CPUs'}"
    )
    done: list[StageResult] = []
    failed_modes: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="edge-bench-e2e-") as tmp:
        for i, (mode, units, rate) in enumerate(stages):
            if mode in failed_modes and not args.all_stages:
                continue
            r = run_stage(
                models,
                mode,
                units,
                rate,
                seconds,
                Path(tmp) / f"stage{i}",
                fault_units=min(args.fault_units, units),
                publish_scores=not args.no_scores,
                agent_extra={"models.stride": args.stride} if args.stride > 1 else None,
                profile=Path(tmp) / f"profile{i}.txt" if args.profile else None,
            )
            done.append(r)
            print(
                f"  {mode:9s} {units:4d} units {rate:6d}/s offered: received "
                f"{r.sustained_msgs_per_s:8,.0f} msgs/s, cpu {r.agent_cpu_percent or 0:5.1f}%, "
                f"p99 score {r.score_latency_p99_ms or float('nan'):7.1f} ms, kept up "
                f"{'yes' if r.kept_up else 'NO: ' + '; '.join(r.why_not)}",
                flush=True,
            )
            if not r.kept_up:
                failed_modes.add(mode)
    rows = [
        [
            r.mode,
            r.units,
            r.offered_rate,
            round(r.step_seconds * 1000, 1),
            r.sustained_msgs_per_s,
            r.sustained_readings_per_s,
            r.agent_cpu_percent,
            r.msgs_per_cpu_second,
            r.score_latency_p50_ms,
            r.score_latency_p99_ms,
            None
            if r.agent_reading_to_score_p99_s is None
            else r.agent_reading_to_score_p99_s * 1000,
            r.alert_latency_p99_ms,
            r.event_loop_lag_max_s,
            r.lost_messages + r.lost_steps + r.lost_scores,
            r.kept_up,
        ]
        for r in done
    ]
    results.print_table(
        [
            "mode",
            "units",
            "offered/s",
            "step ms",
            "msgs/s",
            "readings/s",
            "cpu %",
            "msgs/cpu-s",
            "p50 ms",
            "p99 ms",
            "agent p99 ms",
            "alert p99 ms",
            "loop lag max s",
            "lost",
            "kept up",
        ],
        rows,
        "End to end (edge-agent run + Mosquitto). p50/p99: reading published -> score received "
        "(subscriber); agent p99: last reading arrived -> scored (agent histogram, bucket bound)",
    )
    summary, targets = summarise(done)
    results.print_table(
        ["figure", "value", "target", "met"],
        [[t.figure, t.value, t.target, t.met] for t in targets],
        "Targets",
    )
    result = {
        "models": str(models),
        "settings": {
            "seconds": seconds,
            "publish_scores": not args.no_scores,
            "stride": args.stride,
            "fault_units": args.fault_units,
            "publish_qos": 0,
            "agent_cpus": sorted(procstat.cpu_split()[0] or []),
        },
        "stages": [r.to_dict() for r in done],
        "summary": summary,
        "targets": [t.to_dict() for t in targets],
    }
    return results.save(args, result)


def summarise(stages: list[StageResult]) -> tuple[dict[str, Any], list[results.Target]]:
    def best(mode: str) -> StageResult | None:
        ok = [r for r in stages if r.mode == mode and r.kept_up]
        return max(ok, key=lambda r: r.sustained_msgs_per_s) if ok else None

    sens, tele = best("sensors"), best("telemetry")
    any_best = max(
        [r for r in (sens, tele) if r], key=lambda r: r.sustained_msgs_per_s, default=None
    )
    at_1k = [r for r in stages if 800 <= r.offered_rate <= 1200]
    p99_1k = max(
        (r.score_latency_p99_ms for r in at_1k if r.score_latency_p99_ms is not None), default=None
    )
    agent_p99_1k = max(
        (r.agent_reading_to_score_p99_s for r in at_1k if r.agent_reading_to_score_p99_s),
        default=None,
    )
    per_cpu = max(
        (r.msgs_per_cpu_second for r in stages if r.kept_up and r.msgs_per_cpu_second),
        default=None,
    )
    tele_per_cpu = max(
        (
            r.msgs_per_cpu_second
            for r in stages
            if r.kept_up and r.mode == "telemetry" and r.msgs_per_cpu_second
        ),
        default=None,
    )
    lag = max(
        (
            r.event_loop_lag_max_s
            for r in stages
            if r.kept_up and r.event_loop_lag_max_s is not None
        ),
        default=None,
    )
    summary = {
        "sustained_msgs_per_s": any_best.sustained_msgs_per_s if any_best else None,
        "sustained_sensor_msgs_per_s": sens.sustained_msgs_per_s if sens else None,
        "sustained_telemetry_msgs_per_s": tele.sustained_msgs_per_s if tele else None,
        "sustained_telemetry_readings_per_s": tele.sustained_readings_per_s if tele else None,
        "p99_reading_to_score_ms_at_1k": p99_1k,
        "agent_histogram_p99_reading_to_score_ms_at_1k": None
        if agent_p99_1k is None
        else agent_p99_1k * 1000,
        "msgs_per_agent_cpu_second_best": per_cpu,
        "telemetry_readings_per_agent_cpu_second_best": None
        if tele_per_cpu is None
        else tele_per_cpu * 8,
        "event_loop_lag_max_s_kept_up_stages": lag,
        "agent_cpu_percent_at_best": any_best.agent_cpu_percent if any_best else None,
    }
    targets = [
        results.target(
            "sustained msgs/s, one core, 0 loss",
            summary["sustained_msgs_per_s"],
            ">=",
            10000,
            "msgs/s",
        ),
        results.target(
            "sustained readings/s via telemetry",
            summary["sustained_telemetry_readings_per_s"],
            ">=",
            80000,
            "readings/s",
        ),
        results.target(
            "msgs per agent CPU-second (one-core estimate)", per_cpu, ">=", 10000, "msgs/s"
        ),
        results.target(
            "telemetry readings per agent CPU-second",
            summary["telemetry_readings_per_agent_cpu_second_best"],
            ">=",
            80000,
            "readings/s",
        ),
        results.target("p99 reading->score at 1k msgs/s (ms)", p99_1k, "<=", 20, "ms"),
        results.target(
            "  same, agent histogram (bucket bound, ms)",
            summary["agent_histogram_p99_reading_to_score_ms_at_1k"],
            "<=",
            20,
            "ms",
        ),
        results.target(
            "event loop lag max (ms)", None if lag is None else lag * 1000, "<=", 50, "ms"
        ),
    ]
    return summary, targets


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path)
    p.add_argument("--seconds", type=float, default=10.0, help="load per stage")
    p.add_argument(
        "--stage",
        type=parse_stage,
        action="append",
        help="mode:units:rate (repeatable); default: the built-in ladder",
    )
    p.add_argument(
        "--fault-units", type=int, default=2, help="units with periodic faults (for alert latency)"
    )
    p.add_argument("--no-scores", action="store_true", help="topics.publish_scores: false")
    p.add_argument(
        "--stride",
        type=int,
        default=1,
        help="models.stride: score every n-th full window (the lever when scoring is the limit)",
    )
    p.add_argument(
        "--all-stages", action="store_true", help="keep going after a stage that did not keep up"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the agent in each stage (if installed); top functions in JSON",
    )
    results.add_run_options(p, "end_to_end", "one 2-second stage")
    return p


def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
