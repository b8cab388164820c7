"""End to end: the real ``edge-agent run`` process against a real Mosquitto, at stepped rates.

For each stage (mode, units, offered msgs/s) a fresh broker and a fresh agent start; the
agent gets one core of its own when the machine has two or more. ``loadgen.py`` publishes
in a separate process; a raw-socket subscriber in this process counts the scores and alerts
the agent publishes and times them. The agent's step period is set (``align.step_seconds``)
so each unit publishes ``rate / units`` messages per second; the models do not know time.

Accounting (zero loss): every message the load generator wrote must be counted by the
agent (``messages_received``), every step it published must be accounted for as scored,
still warming up (the first ``window - 1`` steps of a unit), stale, late or rejected, and
every scored step's score must reach the subscriber. A stage *keeps up* when nothing is
lost, nothing is late or rejected and the agent has drained within a few seconds of the
load generator's end; the sustained rate is the highest stage that keeps up.

Latency: the load generator stamps each step with its nominal publish time (see
loadgen.py), so reading→score = score arrival at the subscriber − that time (exact,
per score), next to the agent's own ``edge_agent_reading_to_score_seconds`` histogram
(arrival of the step's last reading → score, bucket bounds).

    python benchmarks/end_to_end.py [--models DIR] [--seconds 10] [--quick]
        [--stage telemetry:500:10000 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
import model_sets
import procstat
import results
import timing

from harness.agent import PRODUCTION_ENV, AgentProcess
from harness.broker import running_broker
from harness.metrics import MetricsSnapshot
from harness.net import HOST, free_port
from harness.process import venv_bin, wait_for
from harness.raw_subscriber import RawSubscriber

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
    ("telemetry", 200, 5000),
    ("telemetry", 500, 10000),
    ("telemetry", 500, 15000),
    ("telemetry", 500, 20000),
)
QUICK_STAGES: tuple[tuple[str, int, int], ...] = (("sensors", 4, 1000),)
LIMIT_HI = 95.0  # bearing_temperature: healthy runs stay below, a +35 degC fault crosses


# ------------------------------------------------------------------------------ the agent


@dataclass
class AgentOptions:
    models: Path
    step_seconds: float
    units: list[str] | None = None  # None: auto-discover
    fault_units: list[str] = field(default_factory=list)
    publish_scores: bool = True
    qos: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def bench_agent_config(
    work: Path, port: int, metrics_port: int, opts: AgentOptions, client_id: str = "bench-agent"
) -> dict[str, Any]:
    """The agent's config for one run (state and outbox under ``work``)."""
    names = sorted(set(opts.units or []) | set(opts.fault_units))
    units = [
        {
            "name": n,
            **(
                {"limits": {"bearing_temperature": {"hi": LIMIT_HI}}}
                if n in opts.fault_units
                else {}
            ),
        }
        for n in names
    ]
    cfg: dict[str, Any] = {
        "agent_id": "bench",
        "plant": "plant1",
        "state_dir": str(work / "state"),
        "mqtt": {
            "host": HOST,
            "port": port,
            "client_id": client_id,
            "qos": opts.qos,
            "reconnect_min_seconds": 0.1,
            "reconnect_max_seconds": 1.0,
        },
        "topics": {"publish_scores": opts.publish_scores},
        "units": units,
        "ingest": {"auto_discover_units": opts.units is None, "max_units": 1000},
        "models": {"dir": str(opts.models), "threads": 1},
        "align": {"step_seconds": opts.step_seconds},
        "metrics": {"enabled": True, "host": HOST, "port": metrics_port},
        "logging": {"level": "INFO", "format": "json"},
    }
    for dotted, value in opts.extra.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return cfg


def start_agent(
    workdir: Path, config: dict[str, Any], cpus: set[int] | None, executable: str | None = None
) -> AgentProcess:
    """The harness's agent process as the benchmarks run it, started and ready.

    The ``edge-agent`` console script (default: the running environment's), with the
    environment of the systemd unit, pinned to ``cpus``; the log is polled every 5 ms, since
    start-to-ready is one of the figures. Stopped again if it does not get ready.
    """
    agent = AgentProcess(
        workdir,
        config,
        env=PRODUCTION_ENV,
        command=[executable or venv_bin("edge-agent")],
        cwd=Path.cwd(),
        cpus=cpus,
    )
    try:
        return agent.start(timeout=60.0, interval=0.005)
    except BaseException:
        agent.stop()
        raise


# ------------------------------------------------------------------------------ subscriber


class OutputCounter:
    """Counts and times what the agent publishes: scores, alerts (de-duplicated), status.

    Latencies are kept as (unit index, step index, ms) so that steps the load generator never
    published (the agent carries a silent unit's last values forward for a while after the
    load ends) can be left out once the load generator's summary is known.
    """

    def __init__(self, plan: loadgen.Plan | None) -> None:
        self.plan = plan
        self.lock = threading.Lock()
        #: score messages, and those with a score (older agents also sent warm-up steps)
        self.scores = 0
        self.scored = 0
        self.score_samples: list[tuple[int, int, float]] = []
        self.alert_messages = 0
        self.raised: dict[str, float] = {}  # alert_id -> first arrival
        self.raised_samples: list[tuple[int, int, float]] = []
        self.cleared: set[str] = set()
        self.resent = 0
        self.status: list[str] = []
        self.unit_index: dict[str, int] = {}
        if plan is not None:
            self.unit_index = {plan.unit_name(u): u for u in range(plan.units)}

    def _sample(self, unit: str, ts_text: str, arrival: float) -> tuple[int, int, float] | None:
        if self.plan is None or unit not in self.unit_index:
            return None
        u = self.unit_index[unit]
        k = loadgen.step_index_of(self.plan, datetime.fromisoformat(ts_text).timestamp())
        return u, k, 1000.0 * (arrival - loadgen.nominal_time(self.plan, k, u))

    def on_message(self, topic: str, payload: bytes, arrival: float) -> None:
        parts = topic.split("/")
        kind = parts[-1]
        if kind == "scores":
            doc = orjson.loads(payload)
            sample = self._sample(parts[2], doc["ts"], arrival)
            with self.lock:
                self.scores += 1
                if doc.get("score") is not None:
                    self.scored += 1
                    if sample is not None:
                        self.score_samples.append(sample)
        elif kind == "alerts":
            doc = orjson.loads(payload)
            with self.lock:
                self.alert_messages += 1
                self.resent += bool(doc.get("resent"))
                aid = doc["alert_id"]
                if doc.get("state") == "raised" and aid not in self.raised:
                    self.raised[aid] = arrival
                    sample = self._sample(parts[2], doc["ts"], arrival)
                    if sample is not None:
                        self.raised_samples.append(sample)
                elif doc.get("state") == "cleared":
                    self.cleared.add(aid)
        elif kind == "status":
            with self.lock:
                self.status.append(payload.decode(errors="replace"))

    def latencies(
        self,
        samples: list[tuple[int, int, float]],
        first_step: int | None,
        steps_per_unit: list[int],
    ) -> list[float]:
        """Sorted latencies (ms) of steps the load generator actually published."""
        with self.lock:
            rows = list(samples)
        if first_step is None:
            return sorted(ms for _, _, ms in rows)
        return sorted(
            ms
            for u, k, ms in rows
            if u < len(steps_per_unit) and first_step <= k < first_step + steps_per_unit[u]
        )


def subscribe(
    port: int, counter: OutputCounter, client_id: str = "bench-out", scores: bool = True
) -> RawSubscriber:
    filters = [("plant/plant1/+/alerts", 1), ("plant/plant1/edge/+/status", 1)]
    if scores:
        filters.append(("plant/plant1/+/scores", 0))
    return RawSubscriber(port, filters, counter.on_message, client_id=client_id).start()


# ------------------------------------------------------------------------------ one stage


@dataclass
class StageResult:
    mode: str
    units: int
    offered_rate: float
    step_seconds: float
    seconds: float
    messages_sent: int = 0
    readings_sent: int = 0
    achieved_rate: float = 0.0
    loadgen_lag_p99_ms: float | None = None
    messages_received: int = 0
    rejected: dict[str, float] = field(default_factory=dict)
    readings_late: float = 0.0
    readings_duplicate: float = 0.0
    steps_sent: int = 0
    steps_scored: float = 0.0
    steps_warmup: float = 0.0
    steps_stale: float = 0.0
    steps_stride: float = 0.0
    scores_received: int = 0
    #: scores messages with a score (the rest are warm-up or stale steps)
    scores_with_score: int = 0
    steps_published: float = 0.0
    publish_dropped: dict[str, float] = field(default_factory=dict)
    alerts_raised_agent: float = 0.0
    alerts_raised_received: int = 0
    drained_seconds: float | None = None
    lost_messages: int = 0
    lost_steps: int = 0
    lost_scores: int = 0
    kept_up: bool = False
    why_not: list[str] = field(default_factory=list)
    #: problems of the harness (not the agent) that make a figure less exact
    warnings: list[str] = field(default_factory=list)
    publish_scores: bool = True
    #: measured after the warm-up (every unit's window full), over window_seconds
    window_seconds: float = 0.0
    sustained_msgs_per_s: float = 0.0
    sustained_readings_per_s: float = 0.0
    processed_msgs_per_s: float = 0.0
    scored_per_s: float = 0.0
    #: msgs/s divided by the agent's CPU share: what one core of its own would take
    msgs_per_cpu_second: float | None = None
    score_latency_p50_ms: float | None = None
    score_latency_p99_ms: float | None = None
    score_latency_max_ms: float | None = None
    alert_latency_p50_ms: float | None = None
    alert_latency_p99_ms: float | None = None
    agent_reading_to_score_p50_s: float | None = None
    agent_reading_to_score_p99_s: float | None = None
    agent_reading_to_alert_p99_s: float | None = None
    event_loop_lag_max_s: float | None = None
    event_loop_lag_p99_s: float | None = None
    agent_cpu_percent: float | None = None
    agent_rss_mb: float | None = None
    agent_ready_seconds: float | None = None
    batch_size_mean: float | None = None
    agent_errors: list[str] = field(default_factory=list)
    #: py-spy's view of the agent during the measured window (``--profile``)
    profile: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_stage(
    models: Path,
    mode: str,
    units: int,
    rate: float,
    seconds: float,
    work: Path,
    *,
    fault_units: int = 0,
    publish_scores: bool = True,
    qos_in: int = 0,
    drain_timeout: float = 15.0,
    agent_extra: dict[str, Any] | None = None,
    window: int | None = None,
    profile: Path | None = None,
    fault_every: int = 100,
) -> StageResult:
    """One fresh broker + agent, one load-generator run, full accounting."""
    plan = loadgen.Plan(units, rate, mode)
    window = window or int(model_sets.load_manifest_dict(models)["window"])
    agent_cpus, other_cpus = procstat.cpu_split()
    work.mkdir(parents=True, exist_ok=True)
    res = StageResult(mode, units, rate, plan.step_seconds, seconds, publish_scores=publish_scores)
    fault_names = [plan.unit_name(u) for u in range(fault_units)]
    with running_broker(work / "broker", cpus=other_cpus) as broker:
        metrics_port = free_port()
        opts = AgentOptions(
            models, plan.step_seconds, None, fault_names, publish_scores, extra=agent_extra or {}
        )
        config = bench_agent_config(work, broker.port, metrics_port, opts)
        agent = start_agent(work / "agent", config, agent_cpus)
        res.agent_ready_seconds = agent.ready_seconds
        counter = OutputCounter(plan)
        sub = subscribe(broker.port, counter, scores=publish_scores)
        try:
            summary_path = work / "loadgen.json"
            # Warm-up: every unit's window fills before the measured window starts.
            warmup = (window + 5) * plan.step_seconds + 0.5
            gen = loadgen.start_loadgen(
                broker.port, units=units, mode=mode, rate=rate, duration=warmup + seconds,
                summary=summary_path, cpus=other_cpus, announce=True,
                qos=qos_in, fault_units=fault_units, fault_every=fault_every, fault_len=20,
            )  # fmt: skip
            assert gen.stdout is not None
            line = gen.stdout.readline()
            if not line.startswith("publishing"):
                raise RuntimeError(f"load generator did not start: {line!r}")
            time.sleep(max(0.0, float(line.split()[1]) + warmup - time.time()))
            before = agent.scrape()
            t_window = time.monotonic()
            cpu = procstat.CpuMeter(agent.pid)
            cpu.start()
            spy = _start_profiler(agent.pid, seconds, profile) if profile else None
            line = gen.stdout.readline()  # "done <time>" as soon as the last write is out
            res.agent_cpu_percent = cpu.stop()
            at_end = agent.scrape()
            window_seconds = time.monotonic() - t_window
            gen.wait(timeout=warmup + seconds + 120)
            sent = json.loads(summary_path.read_text())
            res.messages_sent = sent["messages_sent"]
            res.readings_sent = sent["readings_sent"]
            res.achieved_rate = sent["achieved_rate"]
            res.loadgen_lag_p99_ms = sent["lag_p99_ms"]
            res.steps_sent = sum(sent["steps_per_unit"])
            expected_warmup = sum(min(s, window - 1) for s in sent["steps_per_unit"])
            t_end = time.monotonic()

            def accounted() -> tuple[MetricsSnapshot, bool]:
                m = agent.scrape()
                steps = (
                    m.value("edge_agent_steps_scored")
                    + m.value("edge_agent_steps_stale")
                    + m.value("edge_agent_steps_dropped")
                )
                done = (
                    m.value("edge_agent_messages_received") >= res.messages_sent
                    and steps >= res.steps_sent
                )
                return m, done

            m, done = accounted()
            while not done and time.monotonic() - t_end < drain_timeout:
                time.sleep(0.05)
                m, done = accounted()
            if done:
                res.drained_seconds = time.monotonic() - t_end
            # scores are published after scoring: give the last ones a moment to arrive
            wait_for(lambda: counter.scored >= m.value("edge_agent_steps_scored"), 3.0)
            time.sleep(0.2)
            m = agent.scrape()
            res.agent_rss_mb = procstat.proc_rss_mb(agent.pid)
            if spy is not None and profile is not None:
                spy.wait(timeout=60)
                res.profile = summarise_profile(profile)
        finally:
            sub.close()
            agent.stop()
        res.agent_errors = agent.errors()[:5]
    _account(res, m, before, counter, expected_warmup, sent)
    res.window_seconds = window_seconds
    received = at_end.value("edge_agent_messages_received") - before.value(
        "edge_agent_messages_received"
    )
    res.processed_msgs_per_s = received / window_seconds if window_seconds > 0 else 0.0
    # Kept up = everything offered was processed: the sustained rate is the offered one.
    res.sustained_msgs_per_s = res.achieved_rate if res.kept_up else res.processed_msgs_per_s
    res.sustained_readings_per_s = res.sustained_msgs_per_s * plan.readings_per_message
    scored = at_end.value("edge_agent_steps_scored") - before.value("edge_agent_steps_scored")
    res.scored_per_s = scored / window_seconds if window_seconds > 0 else 0.0
    if res.agent_cpu_percent:
        res.msgs_per_cpu_second = res.processed_msgs_per_s / (res.agent_cpu_percent / 100.0)
    return res


def _start_profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (if installed) sampling the agent for the measured window, collapsed stacks."""
    try:
        spy = venv_bin("py-spy")
    except FileNotFoundError:
        print("  (py-spy not installed: no profile)", flush=True)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            spy,
            "record",
            "-p",
            str(pid),
            "-d",
            str(max(1, int(seconds))),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    if not path.is_file():
        return {}
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
            if " (" in f
            else f
            for f in stack.split(";")
        ]
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for f in set(frames):
            incl_n[f] = incl_n.get(f, 0) + n
    if not total:
        return {}

    def share(d: dict[str, int]) -> list[tuple[str, float]]:
        return [
            (k, round(100.0 * v / total, 1))
            for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]
        ]

    return {
        "samples": total,
        "file": str(path),
        "self_percent": share(self_n),
        "inclusive_percent": share(incl_n),
    }


def _steps_published(m: MetricsSnapshot) -> float:
    """Closed steps that produce a scores message (all but silently skipped ones)."""
    return m.value("edge_agent_steps_closed") - m.value("edge_agent_steps_closed", how="skipped")


def _account(
    res: StageResult,
    m: MetricsSnapshot,
    before: MetricsSnapshot,
    counter: OutputCounter,
    expected_warmup: int,
    sent: dict[str, Any],
) -> None:
    res.messages_received = int(m.value("edge_agent_messages_received"))
    res.rejected = {
        k: v for k, v in m.by_label("edge_agent_messages_rejected", "reason").items() if v
    }
    res.readings_late = m.value("edge_agent_readings_late")
    res.readings_duplicate = m.value("edge_agent_readings_duplicate")
    res.steps_scored = m.value("edge_agent_steps_scored")
    res.steps_warmup = m.value("edge_agent_steps_dropped", reason="warmup")
    res.steps_stride = m.value("edge_agent_steps_dropped", reason="stride")
    res.steps_stale = m.value("edge_agent_steps_stale")
    res.publish_dropped = {
        k: v for k, v in m.by_label("edge_agent_publish_dropped", "reason").items() if v
    }
    res.alerts_raised_agent = m.value("edge_agent_alerts_raised")
    with counter.lock:
        res.scores_received = counter.scores
        res.alerts_raised_received = len(counter.raised)
    lat = counter.latencies(counter.score_samples, sent["first_step"], sent["steps_per_unit"])
    alat = counter.latencies(counter.raised_samples, sent["first_step"], sent["steps_per_unit"])
    res.lost_messages = max(0, res.messages_sent - res.messages_received)
    accounted = res.steps_scored + res.steps_warmup + res.steps_stride + res.steps_stale
    res.lost_steps = max(0, int(res.steps_sent - accounted))
    res.steps_published = _steps_published(m)
    with counter.lock:
        res.scores_with_score = counter.scored
    res.lost_scores = max(0, int(res.steps_scored - res.scores_with_score))
    res.score_latency_p50_ms = timing.percentile(lat, 50)
    res.score_latency_p99_ms = timing.percentile(lat, 99)
    res.score_latency_max_ms = lat[-1] if lat else None
    res.alert_latency_p50_ms = timing.percentile(alat, 50)
    res.alert_latency_p99_ms = timing.percentile(alat, 99)
    r2s = m.histogram("edge_agent_reading_to_score_seconds").minus(
        before.histogram("edge_agent_reading_to_score_seconds")
    )
    res.agent_reading_to_score_p50_s = r2s.quantile(0.5)
    res.agent_reading_to_score_p99_s = r2s.quantile(0.99)
    res.agent_reading_to_alert_p99_s = m.histogram("edge_agent_reading_to_alert_seconds").quantile(
        0.99
    )
    lag = m.histogram("edge_agent_event_loop_lag_seconds").minus(
        before.histogram("edge_agent_event_loop_lag_seconds")
    )
    res.event_loop_lag_max_s = lag.max_bound()
    res.event_loop_lag_p99_s = lag.quantile(0.99)
    bs = m.histogram("edge_agent_batch_size")
    res.batch_size_mean = bs.mean
    why = []
    if res.lost_messages:
        why.append(f"{res.lost_messages} messages never counted by the agent")
    if res.lost_steps:
        why.append(f"{res.lost_steps} steps unaccounted")
    if res.rejected:
        why.append(f"rejected {res.rejected}")
    if res.readings_late or res.readings_duplicate:
        why.append(f"{res.readings_late:g} late, {res.readings_duplicate:g} duplicate readings")
    if res.publish_dropped:
        why.append(f"scores dropped {res.publish_dropped}")
    if res.publish_scores:
        if res.lost_scores and not res.publish_dropped:
            why.append(f"{res.lost_scores} scored steps whose score never arrived")
    else:
        res.lost_scores = 0
    if res.drained_seconds is None or res.drained_seconds > 3.0:
        why.append(f"still draining {res.drained_seconds or '>15'} s after the load ended")
    if res.steps_warmup > expected_warmup:
        why.append("more warm-up steps than expected (windows were reset)")
    warnings = []
    if res.loadgen_lag_p99_ms is not None and res.loadgen_lag_p99_ms > 20:
        warnings.append(
            f"load generator behind schedule (p99 {res.loadgen_lag_p99_ms:.0f} ms): "
            "subscriber latencies include that"
        )
    if res.achieved_rate < 0.95 * res.offered_rate:
        warnings.append(f"load generator offered only {res.achieved_rate:,.0f} msgs/s")
    res.warnings = warnings
    res.why_not = why
    res.kept_up = not why


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
            "fault_units": args.fault_units,
            "publish_qos": 0,
            "agent_cpus": sorted(procstat.cpu_split()[0] or []),
        },
        "stages": [r.to_dict() for r in done],
        "summary": summary,
        "targets": [t.to_dict() for t in targets],
    }
    if not args.no_write:
        print(f"\nwrote {results.write_result(args.name, result)}")
    return result


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
        "--all-stages", action="store_true", help="keep going after a stage that did not keep up"
    )
    p.add_argument("--pin", action="store_true", help="pin the agent to a core of its own")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the agent in each stage (if installed); top functions in JSON",
    )
    p.add_argument("--quick", action="store_true", help="one 2-second stage")
    p.add_argument("--tiny", action="store_true", help="TensorFlow-free tiny model set")
    p.add_argument("--name", default="end_to_end")
    p.add_argument("--no-write", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
