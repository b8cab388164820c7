"""A new plant's first day: its own historian export through ``edge-train train`` and
``edge-agent replay``, with nothing named and nothing tuned.

The other detection benchmarks judge data the project was built beside (the simulator, SKAB).
This one judges what a site hands over (``historian_export``: 10 s rows, held setpoints, a
deadband valve, whole-degree temperatures, a constant tag, outages). Protocol, fixed before
it was first run (2026-12-06) and not tuned since:

1. ``edge-train train --data fit.csv --out models`` on one healthy day (seed 1), with the
   shipped defaults: no time, label, sensor or gap option (training must guess the columns,
   leave the constant tag out and step over the outages by itself);
2. ``edge-agent replay`` of the **next healthy day** (seed 2): every alarm an operator would
   see, by kind. Target: **0 detection alarms** (``anomaly``, ``bad_quality``), as for the
   simulated plant; ``sensor_stale`` is expected where the export really has no readings;
3. ``edge-agent replay`` of **another day with faults** (seed 3, :data:`FAULTS`): an event is
   detected when a detection alarm is active from its start to ``window`` steps after its end
   (as ``simulated_plant.py`` counts). Target: event recall **≥ 0.9**; detection alarms raised
   outside the events are counted (and, per event, whether an alarm was already raised when
   it began: then "detected" says nothing about the fault).

Added after the first run (same day), which missed target 2 with six anomaly alarms, the four
long ones while the load was below anything in the fit day: **every figure again for a fit on
three healthy days** (72 h, seed 1), the README's advice measured rather than asserted. The
healthy day's figures also split the flagged steps into those with a reading outside the fit
data's range (the training envelope) and the rest. Nothing else changed.

    python benchmarks/historian_plant.py [--hours 24] [--quick]

Writes ``benchmarks/results/historian_plant.json`` (``--quick``: a 4-hour day and a small
model, for the smoke test; its figures judge nothing and it writes nothing unless ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from historian_export import FAULTS, STEP_SECONDS, Export, healthy_export, with_faults  # noqa: E402
from skab import agent_config, alarm_episodes  # noqa: E402

from edge_agent.cli import main as edge_agent_main  # noqa: E402
from edge_agent.pipeline.manifest import Manifest, load_manifest  # noqa: E402
from edge_agent.pipeline.timestamps import parse_table_timestamp  # noqa: E402
from training.cli import main as edge_train_main  # noqa: E402

DETECTION_KINDS = ("anomaly", "bad_quality")
QUICK_TRAIN = ["--window", "20", "--trees", "10", "--epochs", "1", "--threads", "1"]
RECALL_TARGET = 0.9


def replay(work: Path, models: Path, export: Export, name: str) -> list[dict[str, Any]]:
    """``edge-agent replay`` of ``export``; the replayed steps."""
    data = work / f"{name}.csv"
    export.write_csv(data)
    cfg = work / f"{name}.yaml"
    config = agent_config(models, work / f"state-{name}", plant="historian", unit="unit1")
    cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = work / f"{name}.jsonl"
    rc = edge_agent_main(
        ["replay", "--config", str(cfg), "--input", str(data), "--output", str(out)]
    )
    if rc != 0:
        raise RuntimeError(f"edge-agent replay of {name} exited {rc}")
    return [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]


def step_of(export: Export, ts: str) -> int:
    t = parse_table_timestamp(ts)
    assert t is not None
    return round((t - export.timestamp(0)) / STEP_SECONDS)


def outside_envelope(export: Export, manifest: Manifest) -> NDArray[np.bool_]:
    """Per step of ``export``: does any sensor read outside what training saw (its envelope)?"""
    out = np.zeros(export.steps, dtype=bool)
    for spec in manifest.sensors:
        x = export.values[spec.name]
        lo = -np.inf if spec.envelope_lo is None else spec.envelope_lo
        hi = np.inf if spec.envelope_hi is None else spec.envelope_hi
        out |= (x < lo) | (x > hi)
    return out


def healthy_day(export: Export, steps: list[dict[str, Any]], manifest: Manifest) -> dict[str, Any]:
    episodes = alarm_episodes(steps, export.timestamp(0))
    by_kind: dict[str, int] = {}
    for ep in episodes:
        by_kind[ep["kind"]] = by_kind.get(ep["kind"], 0) + 1
    scored = [d for d in steps if d["scored"]]
    detection = [ep for ep in episodes if ep["kind"] in DETECTION_KINDS]
    novel = outside_envelope(export, manifest)
    where = np.array([novel[step_of(export, d["ts"])] for d in scored], dtype=bool)
    flagged = np.array([bool(d["decision"]) for d in scored], dtype=bool)
    return {
        "hours": export.steps * STEP_SECONDS / 3600,
        "rows_missing": int(export.missing_rows.sum()),
        "steps_replayed": len(steps),
        "steps_scored": len(scored),
        "ensemble_flagged_percent": 100 * float(flagged.mean()),
        # what the models never saw: a reading outside the fit data's range
        "scored_outside_envelope_percent": 100 * float(where.mean()),
        "flagged_percent_outside_envelope": 100 * float(flagged[where].mean())
        if where.any()
        else None,
        "flagged_percent_inside_envelope": 100 * float(flagged[~where].mean())
        if (~where).any()
        else None,
        "alarms_raised": by_kind,
        "detection_alarms": len(detection),
        "episodes": episodes,
    }


def faulted_day(export: Export, steps: list[dict[str, Any]], window: int) -> dict[str, Any]:
    active = np.zeros(export.steps, dtype=bool)
    kinds: list[set[str]] = [set() for _ in range(export.steps)]
    for d in steps:
        i = step_of(export, d["ts"])
        if 0 <= i < export.steps:
            on = {k for k in DETECTION_KINDS if d["alarms"].get(k)}
            active[i] = bool(on)
            kinds[i] = on
    covered = np.zeros(export.steps, dtype=bool)
    events = []
    for fault, a, b in export.events:
        stop = min(export.steps, b + window)
        covered[a:stop] = True
        hit = np.flatnonzero(active[a:stop])
        events.append(
            {
                "kind": fault.kind,
                "sensor": fault.sensor,
                "start_step": a,
                "steps": b - a,
                "detected": bool(hit.size),
                "delay_seconds": float(hit[0] * STEP_SECONDS) if hit.size else None,
                "by": sorted(kinds[a + int(hit[0])]) if hit.size else [],
                # an alarm already raised when the fault began (for something else) is
                # counted as the protocol says, but it is no evidence the fault was seen
                "already_raised_at_start": bool(active[a]),
            }
        )
    starts = np.flatnonzero(np.diff(np.concatenate(([0], active.astype(np.int8)))) == 1)
    detected = sum(e["detected"] for e in events)
    return {
        "events": events,
        "detected": detected,
        "event_recall": detected / len(events) if events else None,
        "detection_alarms_outside_events": int(np.sum(~covered[starts])),
    }


def judge_fit(work: Path, fit_days: float, hours: float, quick: bool) -> dict[str, Any]:
    """Train on ``fit_days`` healthy days (seed 1), replay the healthy and the faulted day."""
    t0 = time.perf_counter()
    fit = healthy_export(1, "2026-01-01", fit_days * hours)
    healthy = healthy_export(2, "2026-01-10", hours)
    faulty = with_faults(healthy_export(3, "2026-01-11", hours), seed=3)
    run = work / f"fit-{fit_days:g}"
    run.mkdir()
    fit_csv = run / "fit.csv"
    fit.write_csv(fit_csv)
    models = run / "models"
    argv = ["train", "--data", str(fit_csv), "--out", str(models), "--no-report"]
    rc = edge_train_main(argv + (QUICK_TRAIN if quick else []))
    if rc != 0:
        raise RuntimeError(f"edge-train train exited {rc}")
    train_s = time.perf_counter() - t0
    manifest = load_manifest(models)
    quiet = healthy_day(healthy, replay(run, models, healthy, "healthy"), manifest)
    faults = faulted_day(faulty, replay(run, models, faulty, "faulty"), manifest.window)
    data = manifest.metrics["data"]
    return {
        "fit_days": fit_days,
        "training": {
            "sensors": manifest.sensor_names,
            "timestamp_column": data["timestamp_column"],
            "constant_columns": data["constant_columns"],
            "gaps": data["gaps"]["count"],
            "gap_steps": data["gaps"]["steps"],
            "calibration_mode": data["calibration_mode"],
            "warnings": manifest.training_warnings,
            "envelope": {s.name: [s.envelope_lo, s.envelope_hi] for s in manifest.sensors},
            "seconds": round(train_s, 1),
        },
        "healthy_day": quiet,
        "faulted_day": faults,
    }


def run(hours: float, quick: bool, fit_days: list[float]) -> dict[str, Any]:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="historian-") as tmp:
        fits = [judge_fit(Path(tmp), days, hours, quick) for days in fit_days]
    return {
        "protocol": "historian_plant 2026-12-06",
        "hours_per_day": hours,
        "quick": quick,
        "fits": fits,
        "faults": [f.__dict__ for f in FAULTS],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def describe(fit: dict[str, Any]) -> list[str]:
    t, q, f = fit["training"], fit["healthy_day"], fit["faulted_day"]
    recall = f["event_recall"] or 0.0
    inside, outside = q["flagged_percent_inside_envelope"], q["flagged_percent_outside_envelope"]
    lines = [
        f"fit on {fit['fit_days']:g} day(s): {len(t['sensors'])} sensors {t['sensors']}, time "
        f"column {t['timestamp_column']!r}, left out {t['constant_columns']}, {t['gaps']} gaps "
        f"({t['gap_steps']} steps) stepped over, {t['calibration_mode']}, "
        f"{len(t['warnings'])} warning(s), {t['seconds']:.0f} s",
        f"  healthy day ({q['hours']:g} h, {q['steps_scored']} steps scored): ensemble flags "
        f"{q['ensemble_flagged_percent']:.2f} % (stated 0.5 %) — "
        f"{q['scored_outside_envelope_percent']:.1f} % of the steps read outside the fit "
        f"data's range, flagged "
        + ("-" if outside is None else f"{outside:.1f} %")
        + " of those and "
        + ("-" if inside is None else f"{inside:.2f} %")
        + f" of the rest; alarms {q['alarms_raised'] or 'none'}; detection alarms "
        f"{q['detection_alarms']} (target 0): "
        + ("met" if q["detection_alarms"] == 0 else "MISSED"),
        *(
            f"    {ep['raised'][11:19]} {ep['alarm']} {ep['seconds']:.0f} s: {ep['message'][:110]}"
            for ep in q["episodes"]
        ),
        f"  faulted day: event recall {f['detected']}/{len(f['events'])} = {recall:.2f} "
        f"(target {RECALL_TARGET}): "
        + ("met" if recall >= RECALL_TARGET else "MISSED")
        + f"; detection alarms outside events {f['detection_alarms_outside_events']}",
        *(
            f"    {e['kind']} {e['sensor']}: "
            + (
                f"detected after {e['delay_seconds']:.0f} s by {e['by']}"
                + (" (already raised when it began)" if e["already_raised_at_start"] else "")
                if e["detected"]
                else "missed"
            )
            for e in f["events"]
        ),
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, default=None, help="length of each day (default 24)")
    p.add_argument("--quick", action="store_true", help="a 4-hour day, a small model")
    p.add_argument(
        "--fit-days", default=None, help="comma-separated fit lengths in days (default 1,3)"
    )
    p.add_argument("--out", type=Path, default=None, help="(default: results/, not --quick)")
    a = p.parse_args(argv)
    days = [float(d) for d in (a.fit_days or ("1" if a.quick else "1,3")).split(",")]
    result = run(a.hours or (4.0 if a.quick else 24.0), a.quick, days)
    for fit in result["fits"]:
        for line in describe(fit):
            print(line)
    out = a.out or (None if a.quick else REPO / "benchmarks" / "results" / "historian_plant.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    print(f"total {result['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
