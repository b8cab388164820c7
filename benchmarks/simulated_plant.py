"""Is the shipped model set quiet on a healthy plant, and does it see the faults?

Through the product: every unit is simulated (``edge_agent.tools.simulator.settled_run``: a unit
that was already running, seeds outside the training fleet's), written as a CSV and run
through ``edge_agent.tools.replay.replay`` — the daemon's ingest → align → score → ensemble →
alarm code with the data's own clock — with the agent's default alarm delays.

* **Quiet plant**: ``--units`` units × ``--hours`` hours of normal operation (every phase of
  the load cycle: the simulated day is ``--day-seconds`` long). Target: 0 raised alerts of
  the detection kinds (``anomaly`` from the models, ``bad_quality`` from sensor health).
* **Event recall**: the generator's random fault schedule (every fault kind, magnitudes
  0.8–1.5, as ``edge-train generate`` uses) on ``--fault-units`` further units, and the
  demo's fault schedule; an event counts as detected when one of the unit's detection
  alarms (anomaly, or bad quality of a sensor) is active at some step from its start to
  ``window`` steps after its end. Target: ≥ 90 %.

    python benchmarks/simulated_plant.py [--models models] [--hours 24] [--units 3]

Writes ``benchmarks/results/simulated_plant.json``.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.config import load_settings  # noqa: E402
from edge_agent.model_loading import load_model_set  # noqa: E402
from edge_agent.pipeline.ingest import parse_table_timestamp  # noqa: E402
from edge_agent.tools.demo import DEMO_FAULTS  # noqa: E402
from edge_agent.tools.publisher import parse_fault  # noqa: E402
from edge_agent.tools.replay import replay  # noqa: E402
from edge_agent.tools.simulator import FaultEvent, random_fault_schedule, settled_run  # noqa: E402

START = 1_767_225_600.0
#: Alarms that are the detection of a fault (limit alarms are not configured here).
DETECTION_KINDS = ("anomaly", "bad_quality")


def run_unit(
    models: str, seed: int, steps: int, faults: list[FaultEvent], day_seconds: float
) -> dict[str, Any]:
    """Replay one simulated unit; per step: alarm active, decision; raised anomaly alerts."""
    result = settled_run(steps, faults, seed=seed, start_time=START, day_seconds=day_seconds)
    with tempfile.TemporaryDirectory(prefix="simplant-") as tmp:
        work = Path(tmp)
        result.to_csv(work / "unit.csv")
        settings = load_settings(
            None,
            agent_id="bench",
            plant="sim",
            state_dir=work / "state",
            units=[{"name": "unit"}],
            models={"dir": models},
            metrics={"enabled": False},
            logging={"level": "WARNING"},
        )
        model_set = load_model_set(settings, None)
        replay(settings, model_set, work / "unit.csv", work / "out.jsonl")
        active = np.zeros(steps, dtype=bool)
        decision = np.zeros(steps, dtype=bool)
        raised: list[float] = []
        for line in (work / "out.jsonl").read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            ts = parse_table_timestamp(d["ts"])
            assert ts is not None
            i = round(ts - START)
            if 0 <= i < steps:
                active[i] = any(d["alarms"].get(k) for k in DETECTION_KINDS)
                decision[i] = bool(d["decision"])
            raised += [
                (ts, a["kind"])
                for a in d["alerts"]
                if a["kind"] in DETECTION_KINDS and a["state"] == "raised"
            ]
    return {
        "seed": seed,
        "active": active,
        "decision": decision,
        "raised": raised,
        "events": [e.to_dict() for e in result.events],
        "window": model_set.window,
    }


def quiet(results: list[dict[str, Any]], day_seconds: float) -> dict[str, Any]:
    per_unit = []
    phases: list[float] = []
    kinds: dict[str, int] = {}
    for r in results:
        per_unit.append({"seed": r["seed"], "raised": len(r["raised"])})
        phases += [((t - START) % day_seconds) / day_seconds for t, _k in r["raised"]]
        for _t, k in r["raised"]:
            kinds[k] = kinds.get(k, 0) + 1
    return {
        "units": len(results),
        "raised_alerts": sum(u["raised"] for u in per_unit),
        "raised_by_kind": kinds,
        "per_unit": per_unit,
        "phases_of_raised": [round(p, 3) for p in phases],
        "point_flagged_percent": 100 * float(np.mean([r["decision"].mean() for r in results])),
    }


def recall(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind: dict[str, list[int]] = {}
    delays: list[float] = []
    outside = 0
    for r in results:
        covered = np.zeros(len(r["active"]), dtype=bool)
        for e in r["events"]:
            stop = min(len(r["active"]), e["end"] + r["window"])
            covered[e["start"] : stop] = True
            hit = np.flatnonzero(r["active"][e["start"] : stop])
            by_kind.setdefault(e["kind"], [0, 0])
            by_kind[e["kind"]][1] += 1
            if hit.size:
                by_kind[e["kind"]][0] += 1
                delays.append(float(hit[0]))
        starts = np.flatnonzero(np.diff(np.concatenate(([0], r["active"].astype(int)))) == 1)
        outside += int(np.sum(~covered[starts]))
    detected = sum(v[0] for v in by_kind.values())
    total = sum(v[1] for v in by_kind.values())
    return {
        "events": total,
        "detected": detected,
        "event_recall": detected / total if total else None,
        "by_kind": {k: {"detected": v[0], "events": v[1]} for k, v in sorted(by_kind.items())},
        "mean_delay_steps": float(np.mean(delays)) if delays else None,
        "alarms_outside_events": outside,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=str(REPO / "models"))
    p.add_argument("--units", type=int, default=3, help="healthy units for the quiet-plant test")
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--fault-units", type=int, default=4, help="units with random faults")
    p.add_argument("--fault-hours", type=float, default=2.0)
    p.add_argument("--events", type=int, default=14, help="faults per fault unit")
    p.add_argument("--seed", type=int, default=500, help="first seed (training uses 7000-7003)")
    p.add_argument("--day-seconds", type=float, default=3600.0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "simulated_plant.json"
    )
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    healthy_steps = int(a.hours * 3600)
    fault_steps = int(a.fault_hours * 3600)
    jobs: list[tuple[str, int, int, list[FaultEvent], float]] = []
    for u in range(a.units):
        jobs.append((a.models, a.seed + u, healthy_steps, [], a.day_seconds))
    for u in range(a.fault_units):
        seed = a.seed + 100 + u
        jobs.append(
            (
                a.models,
                seed,
                fault_steps,
                random_fault_schedule(fault_steps, a.events, seed=seed),
                a.day_seconds,
            )
        )
    demo: dict[str, list[FaultEvent]] = {}
    for spec in DEMO_FAULTS:
        unit, event = parse_fault(spec)
        demo.setdefault(unit or "", []).append(event)
    for i, (_unit, events) in enumerate(sorted(demo.items())):
        jobs.append((a.models, a.seed + 200 + i, 600, events, a.day_seconds))
    # spawn, not fork: a forked copy of a process with onnxruntime threads can deadlock
    with ProcessPoolExecutor(
        max_workers=a.jobs, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        results = list(pool.map(run_unit, *zip(*jobs, strict=True)))
    healthy = results[: a.units]
    faulty = results[a.units : a.units + a.fault_units]
    demo_runs = results[a.units + a.fault_units :]
    summary = {
        "models": a.models,
        "quiet_plant": {"hours_per_unit": a.hours, **quiet(healthy, a.day_seconds)},
        "generator_faults": recall(faulty),
        "demo_faults": recall(demo_runs),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    q, g, d = summary["quiet_plant"], summary["generator_faults"], summary["demo_faults"]
    print(
        f"quiet plant: {q['raised_alerts']} alerts raised {q['raised_by_kind']} over {a.units} "
        f"units x {a.hours:g} h (target 0): {'met' if q['raised_alerts'] == 0 else 'MISSED'}; "
        f"{q['point_flagged_percent']:.3f}% of steps flagged"
    )
    for name, r in (("generator faults", g), ("demo faults", d)):
        er = r["event_recall"] or 0.0
        print(
            f"{name}: event recall {r['detected']}/{r['events']} = {er:.2f} (target 0.90): "
            f"{'met' if er >= 0.9 else 'MISSED'}; by kind "
            + ", ".join(f"{k} {v['detected']}/{v['events']}" for k, v in r["by_kind"].items())
            + f"; alarms outside events {r['alarms_outside_events']}"
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {a.out} ({summary['seconds']}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
