"""Footprint: memory, start-up time and installed size, the agent beside the seed design.

* Start-to-ready: from process start until the agent's log says ``ready`` (connected and
  subscribed) and until its retained ``online`` status reaches a subscriber; the seed
  design's process (baseline_agent.py: Keras + sklearn models, aiomqtt) until it prints
  ``ready`` after loading its models and subscribing. Median of ``--starts`` starts.
* RSS after start, and every few seconds over ``--minutes`` at load (default: per-sensor
  messages, 1 000 msgs/s over 25 units, a load the agent sustains; overload grows its
  bounded queues); growth = last sample - the sample at a quarter of the run (after
  warm-up). The seed design's RSS after start and after ``--baseline-load-seconds``
  of load (it is saturated at a few messages/s).
* Installed size: by default the on-disk size of each package in the dependency closure
  of ``edge-agent`` (no extras) in the running environment (importlib.metadata RECORD
  files plus their ``__pycache__``) vs the closure of the seed design's packages
  (aiomqtt, numpy, tensorflow-cpu, keras, scikit-learn, PyYAML). ``--fresh-venv`` also
  installs the agent alone into a new venv (``pip install .``, from PyPI) and measures it.

    python benchmarks/footprint.py [--models DIR] [--minutes 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import agent_run
import baseline
import load_plan
import loadgen
import model_sets
import procstat
import results
import seed_models
from installed_size import SEED_REQUIREMENTS, closure_size, fresh_venv_size

from harness.broker import running_broker
from harness.net import free_port
from harness.process import wait_for
from harness.raw_subscriber import RawSubscriber

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------ processes


class StatusWatch:
    """First arrival of the agent's retained ``online`` status."""

    def __init__(self) -> None:
        self.online_at: float | None = None

    def on_message(self, topic: str, payload: bytes, arrival: float) -> None:
        if self.online_at is None and b"online" in payload:
            self.online_at = arrival


def agent_start(
    models: Path, work: Path, step: float, executable: str | None = None
) -> dict[str, Any]:
    """One start of the agent: seconds to the ready log line and to the online status."""
    agent_cpus, other_cpus = procstat.cpu_split()
    with running_broker(work / "broker", cpus=other_cpus) as broker:
        watch = StatusWatch()
        sub = RawSubscriber(
            broker.port,
            [("plant/plant1/edge/+/status", 1)],
            watch.on_message,
            client_id="footprint-status",
        ).start()
        metrics_port = free_port()
        cfg = agent_run.bench_agent_config(
            work, broker.port, metrics_port, agent_run.AgentOptions(models, step)
        )
        t0 = time.time()
        agent = agent_run.start_agent(work / "agent", cfg, agent_cpus, executable)
        try:
            wait_for(lambda: watch.online_at is not None, 10)
            time.sleep(1.0)
            rss = procstat.proc_rss_mb(agent.pid)
        finally:
            agent.stop()
            sub.close()
    return {
        "ready_seconds": agent.ready_seconds,
        "online_status_seconds": watch.online_at - t0 if watch.online_at else None,
        "rss_after_start_mb": rss,
    }


def agent_under_load(
    models: Path,
    work: Path,
    minutes: float,
    rate: float,
    units: int,
    sample_every: float,
    mode: str = "sensors",
) -> dict[str, Any]:
    agent_cpus, other_cpus = procstat.cpu_split()
    plan = load_plan.Plan(units, rate, mode)
    samples: list[dict[str, float | None]] = []
    with running_broker(work / "broker-load", cpus=other_cpus) as broker:
        metrics_port = free_port()
        cfg = agent_run.bench_agent_config(
            work,
            broker.port,
            metrics_port,
            agent_run.AgentOptions(models, plan.step_seconds, fault_units=[plan.unit_name(0)]),
        )
        agent = agent_run.start_agent(work / "agent-load", cfg, agent_cpus)
        counter = agent_run.OutputCounter(None)
        sub = agent_run.subscribe(broker.port, counter, client_id="footprint-out")
        try:
            rss0 = procstat.proc_rss_mb(agent.pid)
            seconds = minutes * 60.0
            gen = loadgen.start_loadgen(
                broker.port, units=units, mode=mode, rate=rate, duration=seconds,
                summary=work / "loadgen-load.json", cpus=other_cpus, fault_units=1,
            )  # fmt: skip
            t0 = time.monotonic()
            cpu = procstat.CpuMeter(agent.pid)
            cpu.start()
            while gen.poll() is None:
                time.sleep(sample_every)
                samples.append(
                    {
                        "t": time.monotonic() - t0,
                        "rss_mb": procstat.proc_rss_mb(agent.pid),
                        "fds": procstat.proc_fd_count(agent.pid),
                    }
                )
            cpu_percent = cpu.stop()
            m = agent.scrape()
        finally:
            sub.close()
            agent.stop()
    sent = json.loads((work / "loadgen-load.json").read_text())
    rss = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    quarter = samples[len(samples) // 4]["rss_mb"] if samples else None
    last = rss[-1] if rss else None
    return {
        "minutes": minutes,
        "rate": rate,
        "units": units,
        "mode": mode,
        "rss_after_start_mb": rss0,
        "rss_at_quarter_mb": quarter,
        "rss_end_mb": last,
        "rss_max_mb": max(rss) if rss else None,
        "growth_after_warmup_mb": last - quarter
        if last is not None and quarter is not None
        else None,
        "fds_start": samples[0]["fds"] if samples else None,
        "fds_end": samples[-1]["fds"] if samples else None,
        "cpu_percent": cpu_percent,
        "messages_sent": sent["messages_sent"],
        "messages_received": m.value("edge_agent_messages_received"),
        "steps_scored": m.value("edge_agent_steps_scored"),
        "samples": samples,
    }


def baseline_footprint(
    models: Path, work: Path, load_seconds: float, starts: int
) -> dict[str, Any]:
    agent_cpus, other_cpus = procstat.cpu_split()
    ready, rss_start = [], []
    with running_broker(work / "broker-seed", cpus=other_cpus) as broker:
        for i in range(starts):
            p = baseline.BaselineProcess(
                broker.port, models, work / f"seed{i}.json", ready_only=True, cpus=agent_cpus
            ).start()
            time.sleep(1.0)
            rss_start.append(procstat.proc_rss_mb(p.pid))
            ready.append(p.ready_seconds)
            p.stop()
    loaded = (
        baseline.measure_baseline(models, load_seconds, 60.0, 4, work) if load_seconds > 0 else {}
    )
    return {
        "ready_seconds": statistics.median(ready) if ready else None,
        "ready_seconds_all": ready,
        "rss_after_start_mb": statistics.median([r for r in rss_start if r]) if rss_start else None,
        "rss_after_load_mb": loaded.get("rss_mb"),
        "load_seconds": load_seconds,
        "windows_per_s_under_load": loaded.get("windows_per_s"),
    }


# ------------------------------------------------------------------------------ main


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.pin:
        os.environ["EDGE_BENCH_PIN"] = "1"
    models = model_sets.resolve_models(args.models, tiny=args.tiny)
    minutes = min(args.minutes, 0.1) if args.quick else args.minutes
    starts = 1 if args.quick else args.starts
    out: dict[str, Any] = {"models": str(models)}
    with tempfile.TemporaryDirectory(prefix="edge-bench-footprint-") as tmp:
        work = Path(tmp)
        runs = [agent_start(models, work / f"start{i}", 0.05) for i in range(starts)]
        out["agent_starts"] = runs
        out["agent_ready_seconds"] = statistics.median(
            [r["ready_seconds"] for r in runs if r["ready_seconds"] is not None]
        )
        online = [r["online_status_seconds"] for r in runs if r["online_status_seconds"]]
        out["agent_online_status_seconds"] = statistics.median(online) if online else None
        out["agent_rss_after_start_mb"] = statistics.median(
            [r["rss_after_start_mb"] for r in runs if r["rss_after_start_mb"]]
        )
        print(
            f"agent: ready in {out['agent_ready_seconds']:.2f}s, RSS "
            f"{out['agent_rss_after_start_mb']:.0f} MB after start",
            flush=True,
        )
        if minutes > 0:
            out["agent_load"] = agent_under_load(
                models,
                work,
                minutes,
                args.rate,
                args.units,
                min(5.0, max(0.5, minutes * 60 / 20)),
                args.mode,
            )
            load = out["agent_load"]
            print(
                f"agent at load: RSS end {load['rss_end_mb']:.0f} MB, growth after warm-up "
                f"{load['growth_after_warmup_mb']:+.1f} MB, CPU "
                f"{load['cpu_percent'] or 0:.0f}%",
                flush=True,
            )
        if not args.no_baseline:
            seed_models.native_models(models)  # build (once) before timing its start
            out["seed"] = baseline_footprint(
                models, work, 0 if args.quick else args.baseline_load_seconds, starts
            )
            print(
                f"seed design: ready in {out['seed']['ready_seconds']:.1f}s, RSS "
                f"{out['seed']['rss_after_start_mb']:.0f} MB after start",
                flush=True,
            )
        out["installed"] = {
            "method": "dependency closure in the running environment (importlib.metadata)",
            "agent": closure_size(["edge-agent"]),
            "seed": closure_size(list(SEED_REQUIREMENTS)),
        }
        if args.fresh_venv:
            fresh = out["installed"]["agent_fresh_venv"] = fresh_venv_size(work)
            if "executable" in fresh:  # the agent as a plant would install it: no extras
                runs = [
                    agent_start(models, work / f"fresh{i}", 0.05, fresh["executable"])
                    for i in range(starts)
                ]
                out["agent_fresh_venv_starts"] = runs
                out["agent_fresh_venv_ready_seconds"] = statistics.median(
                    [r["ready_seconds"] for r in runs if r["ready_seconds"] is not None]
                )
                print(
                    f"agent from the agent-only venv: ready in "
                    f"{out['agent_fresh_venv_ready_seconds']:.2f}s",
                    flush=True,
                )
    _report(out)
    if not args.no_write:
        print(f"\nwrote {results.write_result(args.name, out)}")
    return out


def _report(out: dict[str, Any]) -> None:
    load = out.get("agent_load", {})
    seed = out.get("seed", {})
    inst = out["installed"]
    a_mb, s_mb = inst["agent"]["total_mb"], inst["seed"]["total_mb"]
    # the agent's own package is in its closure; the seed closure does not have it
    rows = [
        ["start-to-ready (s)", out["agent_ready_seconds"], seed.get("ready_seconds")],
        ["  to retained online status (s)", out.get("agent_online_status_seconds"), None],
        ["  from an agent-only venv (s)", out.get("agent_fresh_venv_ready_seconds"), None],
        ["RSS after start (MB)", out["agent_rss_after_start_mb"], seed.get("rss_after_start_mb")],
        ["RSS at load, end (MB)", load.get("rss_end_mb"), seed.get("rss_after_load_mb")],
        ["RSS growth after warm-up (MB)", load.get("growth_after_warmup_mb"), None],
        ["installed dependency closure (MB)", a_mb, s_mb],
    ]
    if "agent_fresh_venv" in inst and "without_pip_mb" in inst["agent_fresh_venv"]:
        rows.append(
            [
                "fresh agent-only venv, site-packages w/o pip (MB)",
                inst["agent_fresh_venv"]["without_pip_mb"],
                None,
            ]
        )
    results.print_table(["figure", "edge-agent", "seed design (Keras+sklearn)"], rows, "Footprint")
    targets = [
        results.target(
            "agent RSS at load (MB)",
            load.get("rss_max_mb") or out["agent_rss_after_start_mb"],
            "<=",
            120,
            "MB",
        ),
        results.target(
            "agent RSS growth after warm-up (MB)", load.get("growth_after_warmup_mb"), "<=", 5, "MB"
        ),
        results.target("agent start-to-ready (s)", out["agent_ready_seconds"], "<=", 1.5, "s"),
    ]
    if out.get("agent_fresh_venv_ready_seconds") is not None:
        targets.append(
            results.target(
                "agent start-to-ready, agent-only venv (s)",
                out["agent_fresh_venv_ready_seconds"],
                "<=",
                1.5,
                "s",
            )
        )
    out["targets"] = [t.to_dict() for t in targets]
    out["ratios"] = {
        "rss_after_start_seed_over_agent": (seed.get("rss_after_start_mb") or 0)
        / out["agent_rss_after_start_mb"]
        if seed.get("rss_after_start_mb")
        else None,
        "ready_seed_over_agent": (seed.get("ready_seconds") or 0) / out["agent_ready_seconds"]
        if seed.get("ready_seconds")
        else None,
        "installed_seed_over_agent": s_mb / a_mb if a_mb else None,
    }
    results.print_table(
        ["figure", "value", "target", "met"],
        [[t.figure, t.value, t.target, t.met] for t in targets],
        "Targets",
    )
    results.print_table(
        ["ratio (seed / agent)", "x"], [[k, v] for k, v in out["ratios"].items()], "Ratios"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path)
    p.add_argument("--minutes", type=float, default=10.0, help="minutes at load")
    p.add_argument("--rate", type=float, default=1000.0, help="msgs/s at load")
    p.add_argument("--units", type=int, default=25)
    p.add_argument(
        "--mode",
        choices=["sensors", "telemetry"],
        default="sensors",
        help="load kind (default: a load the agent sustains on a shared 2-core machine)",
    )
    p.add_argument("--starts", type=int, default=3, help="starts to take the median of")
    p.add_argument("--baseline-load-seconds", type=float, default=30.0)
    p.add_argument("--no-baseline", action="store_true", help="skip the Keras+sklearn process")
    p.add_argument(
        "--fresh-venv",
        action="store_true",
        help="also pip install the agent into a new venv (needs PyPI) and measure it",
    )
    p.add_argument("--pin", action="store_true")
    p.add_argument("--quick", action="store_true", help="one start, 6 s at load, no seed load")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--name", default="footprint")
    p.add_argument("--no-write", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
