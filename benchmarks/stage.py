"""One end-to-end stage: a fresh broker and agent, one load-generator run, full accounting.

Accounting (zero loss): every message the load generator wrote must be counted by the
agent (``messages_received``), every step it published must be accounted for as scored,
still warming up (the first ``window - 1`` steps of a unit), stale, late or rejected, and
every scored step's score must reach the subscriber. A stage *keeps up* when nothing is
lost, nothing is late or rejected and the agent has drained within a few seconds of the
load generator's end (see end_to_end.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_plan
import loadgen
import model_sets
import procstat
import timing
from agent_run import AgentOptions, OutputCounter, bench_agent_config, start_agent, subscribe
from profiling import start_profiler, summarise_profile

from harness.agent import AgentProcess
from harness.broker import running_broker
from harness.metrics import MetricsSnapshot
from harness.net import free_port
from harness.process import wait_for

#: Longest wait for the agent to digest a backfill before measuring anyway (seconds).
CATCH_UP_TIMEOUT = 90.0


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
    agent_reading_to_score_p90_s: float | None = None
    agent_reading_to_score_p99_s: float | None = None
    agent_reading_to_score_mean_s: float | None = None
    agent_reading_to_alert_p99_s: float | None = None
    event_loop_lag_max_s: float | None = None
    event_loop_lag_p99_s: float | None = None
    agent_cpu_percent: float | None = None
    agent_rss_mb: float | None = None
    agent_ready_seconds: float | None = None
    batch_size_mean: float | None = None
    agent_errors: list[str] = field(default_factory=list)
    #: wall time the measured window started; seconds the agent took to digest a backfill
    measured_from: float | None = None
    catchup_seconds: float | None = None
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
    fault_len: int = 20,
    burst: bool = False,
    width: int = load_plan.Plan.width,
    backfill: bool = False,
    warmup_seconds: float | None = None,
    observe: Callable[[int], AbstractContextManager[Any]] | None = None,
    catch_up_timeout: float = CATCH_UP_TIMEOUT,
    broker_config: str = "",
) -> StageResult:
    """One fresh broker + agent, one load-generator run, full accounting.

    ``burst``/``width`` shape the load (load_plan.Plan). ``backfill``: the load generator
    writes ``window - 1`` steps of history first, so the measured window starts a few steps
    after the live schedule does (otherwise after ``window + 5`` live steps);
    ``warmup_seconds`` overrides that (a stage too large to warm up in the time at hand).
    With a backfill the measured window starts once the agent is at most two steps behind
    (or after ``catch_up_timeout``: an agent slower than the load never catches up).
    ``observe(broker port)`` is entered once the agent is ready and left after the drain: a
    second subscriber (latency.py's ``mosquitto_sub``). ``broker_config``: lines added to
    the broker's configuration.
    """
    plan = load_plan.Plan(units, rate, mode, burst=burst, width=width)
    window = window or int(model_sets.load_manifest_dict(models)["window"])
    agent_cpus, other_cpus = procstat.cpu_split()
    work.mkdir(parents=True, exist_ok=True)
    res = StageResult(mode, units, rate, plan.step_seconds, seconds, publish_scores=publish_scores)
    fault_names = [plan.unit_name(u) for u in range(fault_units)]
    with running_broker(work / "broker", cpus=other_cpus, extra_config=broker_config) as broker:
        metrics_port = free_port()
        opts = AgentOptions(
            models, plan.step_seconds, None, fault_names, publish_scores, extra=agent_extra or {}
        )
        config = bench_agent_config(work, broker.port, metrics_port, opts)
        agent = start_agent(work / "agent", config, agent_cpus)
        res.agent_ready_seconds = agent.ready_seconds
        counter = OutputCounter(plan)
        sub = subscribe(broker.port, counter, scores=publish_scores)
        observer = contextlib.ExitStack()
        try:
            if observe is not None:
                observer.enter_context(observe(broker.port))
            summary_path = work / "loadgen.json"
            # Warm-up: every unit's window fills before the measured window starts.
            warmup = (5 if backfill else window + 5) * plan.step_seconds + 0.5
            if warmup_seconds is not None:
                warmup = warmup_seconds
            # after a backfill the agent's catch-up takes a while: the load runs until stopped
            extra = CATCH_UP_TIMEOUT if backfill else 0.0
            gen = loadgen.start_loadgen(
                broker.port, units=units, mode=mode, rate=rate, duration=warmup + seconds + extra,
                summary=summary_path, cpus=other_cpus, announce=True,
                qos=qos_in, fault_units=fault_units, fault_every=fault_every, fault_len=fault_len,
                burst=burst, width=width, backfill=window - 1 if backfill else 0,
            )  # fmt: skip
            assert gen.stdout is not None
            line = gen.stdout.readline()
            if not line.startswith("publishing"):
                raise RuntimeError(f"load generator did not start: {line!r}")
            live_at = float(line.split()[1])
            if backfill:  # the history must be through the agent before the live steps count
                history = units * (window - 1) * plan.messages_per_step
                res.catchup_seconds = _catch_up(agent, plan, live_at, history, catch_up_timeout)
            time.sleep(max(0.0, max(live_at, time.time()) + warmup - time.time()))
            res.measured_from = time.time()
            before = agent.scrape()
            t_window = time.monotonic()
            cpu = procstat.CpuMeter(agent.pid)
            cpu.start()
            spy = start_profiler(agent.pid, seconds, profile) if profile else None
            if backfill:  # measured window: `seconds` from now, whatever the catch-up took
                time.sleep(max(0.0, res.measured_from + seconds - time.time()))
                gen.terminate()  # loadgen stops at once and writes its summary
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
            observer.close()
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


def _catch_up(
    agent: AgentProcess,
    plan: load_plan.Plan,
    live_at: float,
    history: int,
    timeout: float = CATCH_UP_TIMEOUT,
) -> float | None:
    """Wait until the agent is at most two steps behind the live load; seconds it took.

    The live schedule starts when the history is written, not when the agent has read it.
    """

    def behind() -> bool:
        due_steps = max(0.0, (time.time() - live_at) / plan.step_seconds - 2)
        due = history + int(due_steps) * plan.units * plan.messages_per_step
        return agent.scrape().value("edge_agent_messages_received") < due

    t0 = time.monotonic()
    ok = wait_for(lambda: not behind(), timeout, interval=0.2)
    return time.monotonic() - t0 if ok else None


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
    since = None
    if counter.plan is not None and res.measured_from is not None:
        since = math.ceil(res.measured_from / counter.plan.step_seconds)
    spu = sent["steps_per_unit"]
    lat = counter.latencies(counter.score_samples, sent["first_step"], spu, since)
    alat = counter.latencies(counter.raised_samples, sent["first_step"], spu, since)
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
    res.agent_reading_to_score_p90_s = r2s.quantile(0.9)
    res.agent_reading_to_score_p99_s = r2s.quantile(0.99)
    res.agent_reading_to_score_mean_s = r2s.mean
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
