"""Soak: minutes of steady load with periodic faults and a broker restart; nothing may leak.

The real agent runs against a real Mosquitto (persistence on) for ``--minutes`` (default 10)
at ``--rate`` telemetry messages/s (default 2 000 over 50 units). ``--fault-units`` units get
a +35 degC bearing-temperature step every ``--fault-every`` steps, past a configured HI
limit, so alerts are raised and cleared all along. Halfway through the broker is restarted
(SIGTERM, start again on the same port with the same data): the agent reconnects, its
outbox delivers what was raised meanwhile. A subscriber with a persistent session counts
every raised alert by ``alert_id``.

Pass criteria: every alert the agent raised (``edge_agent_alerts_raised``) reached the
subscriber (de-duplicated by alert_id), RSS grew by at most 5 MB after warm-up, no file
descriptors were leaked. Not part of CI (minutes); ``run_all.py --soak`` includes it.

    python benchmarks/soak.py [--models DIR] [--minutes 10] [--no-restart]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import agent_run
import load_plan
import loadgen
import model_sets
import procstat
import results

from harness.broker import MosquittoBroker
from harness.net import free_port
from harness.process import pin_to_cpu

HERE = Path(__file__).resolve().parent


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.pin:
        os.environ["EDGE_BENCH_PIN"] = "1"
    models = model_sets.resolve_models(args.models, tiny=args.tiny)
    seconds = args.minutes * 60.0
    plan = load_plan.Plan(args.units, args.rate, args.mode)
    fault_units = min(args.fault_units, args.units)
    agent_cpus, other_cpus = procstat.cpu_split()
    samples: list[dict[str, Any]] = []
    restarts: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-soak-") as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(work / "broker")
        broker.start()
        pin_to_cpu(broker.pid, other_cpus)
        try:
            metrics_port = free_port()
            opts = agent_run.AgentOptions(
                models,
                plan.step_seconds,
                fault_units=[plan.unit_name(u) for u in range(fault_units)],
                publish_scores=not args.no_scores,
                # the soak counts alert delivery, not the flood guard's arithmetic
                extra={"alarm.flood_max": 100000},
            )
            cfg = agent_run.bench_agent_config(
                work, broker.port, metrics_port, opts, client_id="soak-agent"
            )
            agent = agent_run.start_agent(work / "agent", cfg, agent_cpus)
            counter = agent_run.OutputCounter(plan)
            sub = agent_run.subscribe(
                broker.port, counter, client_id="soak-subscriber", scores=False
            )
            gen = loadgen.start_loadgen(
                broker.port, units=args.units, mode=args.mode, rate=args.rate,
                duration=seconds, summary=work / "loadgen.json", cpus=other_cpus,
                fault_units=fault_units, fault_every=args.fault_every, fault_len=args.fault_len,
            )  # fmt: skip
            t0 = time.monotonic()
            cpu = procstat.CpuMeter(agent.pid)
            cpu.start()
            restart_at = seconds / 2 if not args.no_restart else None
            next_sample = 0.0
            while gen.poll() is None:
                now = time.monotonic() - t0
                if restart_at is not None and now >= restart_at:
                    r0 = time.monotonic()
                    broker.restart()
                    pin_to_cpu(broker.pid, other_cpus)
                    restarts.append({"at_s": now, "down_s": time.monotonic() - r0})
                    print(f"  broker restarted at {now:.0f}s", flush=True)
                    restart_at = None
                if now >= next_sample:
                    samples.append(
                        {
                            "t": round(now, 1),
                            "rss_mb": procstat.proc_rss_mb(agent.pid),
                            "fds": procstat.proc_fd_count(agent.pid),
                        }
                    )
                    next_sample += args.sample_every
                time.sleep(0.2)
            cpu_percent = cpu.stop()
            # Let the outbox deliver what is pending, then compare.
            deadline = time.monotonic() + 30
            m = agent.scrape()
            while time.monotonic() < deadline:
                m = agent.scrape()
                with counter.lock:
                    got = len(counter.raised)
                if m.value("edge_agent_outbox_depth") == 0 and got >= m.value(
                    "edge_agent_alerts_raised"
                ):
                    break
                time.sleep(0.5)
            time.sleep(1.0)
            m = agent.scrape()
            samples.append(
                {
                    "t": round(time.monotonic() - t0, 1),
                    "rss_mb": procstat.proc_rss_mb(agent.pid),
                    "fds": procstat.proc_fd_count(agent.pid),
                }
            )
            sub.close()
            errors = agent.errors()[:5]
            agent.stop()
        finally:
            broker.kill()
        sent = json.loads((work / "loadgen.json").read_text())
    raised_agent = m.by_label("edge_agent_alerts_raised", "kind")
    with counter.lock:
        received_ids = set(counter.raised)
        alert_messages = counter.alert_messages
        resent = counter.resent
    raised_total = sum(raised_agent.values())
    lost = max(0, int(raised_total) - len(received_ids))
    warm = samples[max(1, len(samples) // 4)] if len(samples) > 1 else samples[0]
    last = samples[-1]
    rss_growth = (last["rss_mb"] or 0) - (warm["rss_mb"] or 0)
    fd_growth = (last["fds"] or 0) - (warm["fds"] or 0)
    result = {
        "models": str(models),
        "settings": {
            "minutes": args.minutes,
            "rate": args.rate,
            "units": args.units,
            "fault_units": fault_units,
            "fault_every_steps": args.fault_every,
            "fault_len_steps": args.fault_len,
            "step_seconds": plan.step_seconds,
            "broker_restart": not args.no_restart,
        },
        "messages_sent": sent["messages_sent"],
        "messages_failed": sent["messages_failed"],
        "loadgen_reconnects": sent["reconnects"],
        "messages_received": m.value("edge_agent_messages_received"),
        "steps_scored": m.value("edge_agent_steps_scored"),
        "alerts_raised_by_kind": raised_agent,
        "alerts_raised": raised_total,
        "alerts_received_distinct": len(received_ids),
        "alert_messages_received": alert_messages,
        "alerts_resent": resent,
        "alerts_lost": lost,
        "alerts_published_metric": m.value("edge_agent_alerts_published"),
        "outbox_dropped": m.by_label("edge_agent_outbox_dropped", "reason"),
        "agent_reconnects": m.value("edge_agent_reconnects"),
        "broker_restarts": restarts,
        "rss_warm_mb": warm["rss_mb"],
        "rss_end_mb": last["rss_mb"],
        "rss_growth_mb": rss_growth,
        "fds_warm": warm["fds"],
        "fds_end": last["fds"],
        "fd_growth": fd_growth,
        "agent_cpu_percent": cpu_percent,
        "samples": samples,
        "agent_errors": errors,
    }
    targets = [
        results.target("alerts lost", lost, "<=", 0),
        results.target("RSS growth after warm-up (MB)", rss_growth, "<=", 5, "MB"),
        results.target("file descriptor growth", fd_growth, "<=", 0),
    ]
    if raised_total == 0:
        targets[0] = results.Target("alerts lost", None, "<= 0 (no alert was raised)", None)
    result["targets"] = [t.to_dict() for t in targets]
    results.print_table(
        ["figure", "value"],
        [
            [
                "messages sent / received",
                f"{sent['messages_sent']} / {m.value('edge_agent_messages_received'):.0f}",
            ],
            [
                "alerts raised (agent) / received (distinct ids)",
                f"{raised_total:.0f} / {len(received_ids)}",
            ],
            ["alert messages received (incl. cleared, resent)", alert_messages],
            ["agent reconnects", m.value("edge_agent_reconnects")],
            ["RSS warm / end (MB)", f"{warm['rss_mb']:.1f} / {last['rss_mb']:.1f}"],
            ["FDs warm / end", f"{warm['fds']} / {last['fds']}"],
            ["agent CPU %", cpu_percent],
        ],
        f"Soak: {args.minutes:g} min at {args.rate:g} msgs/s",
    )
    results.print_table(
        ["figure", "value", "target", "met"],
        [[t.figure, t.value, t.target, t.met] for t in targets],
        "Targets",
    )
    if not args.no_write:
        print(f"\nwrote {results.write_result(args.name, result)}")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=2000.0, help="msgs/s offered")
    p.add_argument(
        "--mode",
        choices=["sensors", "telemetry"],
        default="sensors",
        help="per-sensor messages (2 k msgs/s = 250 steps/s) or per-unit telemetry (2 k msgs/s "
        "= 16 k readings/s, beyond one agent's measured telemetry capacity)",
    )
    p.add_argument("--units", type=int, default=50)
    p.add_argument("--fault-units", type=int, default=10)
    p.add_argument("--fault-every", type=int, default=600, help="steps between faults")
    p.add_argument("--fault-len", type=int, default=40, help="steps per fault")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--no-restart", action="store_true", help="do not restart the broker")
    p.add_argument("--no-scores", action="store_true")
    p.add_argument("--pin", action="store_true")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--name", default="soak")
    p.add_argument("--no-write", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
