"""The real agent as the benchmarks run it, and a counter of what it publishes.

``bench_agent_config`` writes the config of one run (the step, the units, limits on the units
with faults), ``start_agent`` starts the ``edge-agent`` console script with the systemd unit's
environment (harness.agent), and ``OutputCounter`` + ``subscribe`` count and time the scores,
alerts and status the agent publishes (a raw-socket subscriber in this process).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_plan

from harness.agent import PRODUCTION_ENV, AgentProcess
from harness.net import HOST
from harness.process import venv_bin
from harness.raw_subscriber import RawSubscriber

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

    def __init__(self, plan: load_plan.Plan | None) -> None:
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
        k = load_plan.step_index_of(self.plan, datetime.fromisoformat(ts_text).timestamp())
        return u, k, 1000.0 * (arrival - load_plan.nominal_time(self.plan, k, u))

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
        from_step: int | None = None,
    ) -> list[float]:
        """Sorted latencies (ms) of steps the load generator actually published.

        ``from_step``: only steps from there on (the measured window, after a backfill).
        """
        with self.lock:
            rows = list(samples)
        if first_step is None:
            return sorted(ms for _, _, ms in rows)
        low = max(first_step, from_step or first_step)
        return sorted(
            ms
            for u, k, ms in rows
            if u < len(steps_per_unit) and low <= k < first_step + steps_per_unit[u]
        )


def subscribe(
    port: int, counter: OutputCounter, client_id: str = "bench-out", scores: bool = True
) -> RawSubscriber:
    filters = [("plant/plant1/+/alerts", 1), ("plant/plant1/edge/+/status", 1)]
    if scores:
        filters.append(("plant/plant1/+/scores", 0))
    return RawSubscriber(port, filters, counter.on_message, client_id=client_id).start()
