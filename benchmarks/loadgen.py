"""Load generator: simulated plant readings at a fixed message rate, over raw MQTT 3.1.1.

Runs as its own process so that it never shares an interpreter with what it measures. It
speaks MQTT over a plain socket (CONNECT, PUBLISH, PUBACK, DISCONNECT are a few bytes
each) and writes every due message of a millisecond in one ``sendall``: a Python MQTT
client would be the bottleneck long before the agent.

Each step's messages carry their nominal publish time as ``ts`` (the timing contract is
load_plan.py's) and are written to the socket together as soon as they are due; ``lag`` is
how late that happened. ``--burst``: every unit at the same instant of each step.
``--width N``: N sensors per unit. ``--backfill N``: before the live schedule, the N steps
before it are written at ``--backfill-rate`` msgs/s (history: complete telemetry closes a
step on arrival, so the agent's windows fill in seconds instead of N steps of wall time).

    python benchmarks/loadgen.py --port 1883 --units 100 --mode telemetry --rate 10000 \\
        --duration 10 [--qos 0|1] [--fault-units 2] [--burst] [--width 32] [--backfill 59]
        [--summary out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the repo: the harness
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.net import HOST
from harness.process import pin_to_cpu
from harness.raw_publisher import RawPublisher

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_plan import Plan, offset_us, unit_series

MAX_SERIES_STEPS = 100_000


@dataclass
class Summary:
    """What was published; the end-to-end benchmark's accounting starts here."""

    plan: dict[str, Any]
    step_seconds: float
    messages_sent: int = 0
    readings_sent: int = 0
    bytes_sent: int = 0
    acked: int = 0
    steps_per_unit: list[int] = field(default_factory=list)
    first_step: int | None = None
    started: float = 0.0
    finished: float = 0.0
    achieved_rate: float = 0.0
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None
    late_over_20ms: int = 0
    first_late_at: float | None = None
    send_errors: int = 0
    reconnects: int = 0
    messages_failed: int = 0
    fault_units: int = 0
    #: history written before the live schedule (``--backfill``), and the first live step
    backfill_messages: int = 0
    live_first_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(
    plan: Plan,
    host: str,
    port: int,
    duration: float,
    *,
    qos: int = 0,
    fault_units: int = 0,
    fault_every: int = 200,
    fault_len: int = 40,
    fault_sensor: str = "bearing_temperature",
    fault_offset: float = 35.0,
    client_id: str | None = None,
    stop: threading.Event | None = None,
    announce: bool = False,
    backfill: int = 0,
    backfill_rate: float = 3000.0,
) -> Summary:
    """Publish for ``duration`` seconds (or until ``stop``); return the summary.

    ``backfill`` steps of history go out first (``first_step`` is the first of them,
    ``live_first_step`` the first on schedule); ``duration`` counts from the live start.
    """
    step_us = plan.step_us
    n_steps_total = min(MAX_SERIES_STEPS, int(duration * 1e6 / step_us) + 2 + backfill)
    series = unit_series(
        plan, n_steps_total, fault_units, fault_every, fault_len, fault_sensor, fault_offset
    )
    # Topics are fixed; payloads are serialised as they are sent (a few µs each), so a long
    # run needs no more memory than its float series.
    names = plan.sensors
    if plan.mode == "telemetry":
        topics = [
            [f"plant/{plan.plant}/{plan.unit_name(u)}/telemetry".encode()]
            for u in range(plan.units)
        ]
    else:
        topics = [
            [f"plant/{plan.plant}/{plan.unit_name(u)}/sensors/{name}".encode() for name in names]
            for u in range(plan.units)
        ]
    telemetry = plan.mode == "telemetry"
    pub = RawPublisher(host, port, client_id or f"loadgen-{os.getpid()}", qos)
    pub.connect()
    summary = Summary(
        plan=asdict(plan),
        step_seconds=plan.step_seconds,
        steps_per_unit=[0] * plan.units,
        fault_units=fault_units,
    )
    offsets = [offset_us(plan, u) for u in range(plan.units)]
    n_series = n_steps_total
    backfill_seconds = backfill * plan.units * plan.messages_per_step / backfill_rate
    now_us = int(time.time() * 1e6)
    live_first = (now_us + int(backfill_seconds * 1e6)) // step_us + 1  # the next boundary
    first_step = live_first - backfill
    summary.first_step, summary.live_first_step = first_step, live_first

    def packets(k: int, u: int, due_us: int) -> list[bytes]:
        ts = b'{"ts":' + repr(due_us / 1e6).encode()
        values = series[u][(k - first_step) % n_series].tolist()
        if telemetry:
            body = b',"values":' + orjson.dumps(dict(zip(names, values, strict=True)))
            return [pub.packet(topics[u][0], ts + body + b"}")]
        return [
            pub.packet(topic, ts + b',"value":' + orjson.dumps(v) + b"}")
            for topic, v in zip(topics[u], values, strict=True)
        ]

    if backfill:
        summary.backfill_messages = _backfill(
            pub, plan, range(first_step, live_first), packets, offsets, backfill_rate
        )
        summary.messages_sent += summary.backfill_messages
        summary.steps_per_unit = [backfill] * plan.units
    now_us = int(time.time() * 1e6)
    end_us = max(now_us, live_first * step_us) + int(duration * 1e6)
    lags: list[float] = []
    k, u = live_first, 0
    started = time.time()
    if announce:
        print(f"publishing {started:.6f}", flush=True)
    summary.started = started
    live_sent = 0
    while stop is None or not stop.is_set():
        due_us = k * step_us + offsets[u]
        if due_us >= end_us:
            break
        now = time.time()
        wait = due_us / 1e6 - now
        if wait > 0.0005:
            time.sleep(min(wait, 0.05))
            continue
        # Everything due up to now, in one write.
        now_us = int(now * 1e6)
        chunk: list[bytes] = []
        n_msgs = 0
        while due_us <= now_us and due_us < end_us:
            chunk += packets(k, u, due_us)
            n_msgs += len(topics[u])
            lags.append((now_us - due_us) / 1000.0)
            summary.steps_per_unit[u] += 1
            u += 1
            if u == plan.units:
                u, k = 0, k + 1
            due_us = k * step_us + offsets[u]
        data = b"".join(chunk)
        try:
            pub.send(data)
            live_sent += n_msgs
            summary.bytes_sent += len(data)
        except OSError:
            summary.send_errors += 1
            summary.messages_failed += n_msgs
            pub.close()
            if _reconnect(pub, stop, end_us):
                summary.reconnects += 1
    summary.finished = time.time()
    if announce:
        print(f"done {summary.finished:.6f}", flush=True)
    pub.close()
    summary.messages_sent += live_sent
    summary.acked = pub.acked
    summary.readings_sent = summary.messages_sent * plan.readings_per_message
    elapsed = max(1e-9, summary.finished - started)
    summary.achieved_rate = live_sent / elapsed
    if lags:
        late = [i for i, x in enumerate(lags) if x > 20.0]
        summary.late_over_20ms = len(late)
        if late:  # where in the run (0 = start, 1 = end) the first one was
            summary.first_late_at = late[0] / len(lags)
        lags.sort()
        summary.lag_p50_ms = lags[len(lags) // 2]
        summary.lag_p99_ms = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
        summary.lag_max_ms = lags[-1]
    return summary


def _backfill(
    pub: RawPublisher,
    plan: Plan,
    steps: range,
    packets: Callable[[int, int, int], list[bytes]],
    offsets: list[int],
    rate: float,
) -> int:
    """Write the history steps at ``rate`` msgs/s (10 ms chunks); the messages written."""
    sent, t0 = 0, time.monotonic()
    chunk: list[bytes] = []
    for k in steps:
        for u in range(plan.units):
            chunk += packets(k, u, k * plan.step_us + offsets[u])
            if len(chunk) >= max(1, int(rate / 100)):
                pub.send(b"".join(chunk))
                sent += len(chunk)
                chunk = []
                ahead = t0 + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    if chunk:
        pub.send(b"".join(chunk))
        sent += len(chunk)
    return sent


def _reconnect(pub: RawPublisher, stop: threading.Event | None, end_us: int) -> bool:
    """Retry the connection (broker restart) until it works or the run is over."""
    while time.time() * 1e6 < end_us and (stop is None or not stop.is_set()):
        try:
            pub.connect(timeout=1.0)
            return True
        except OSError:
            time.sleep(0.1)
    return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=HOST)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--units", type=int, default=10)
    p.add_argument("--mode", choices=["telemetry", "sensors"], default="telemetry")
    p.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds")
    p.add_argument("--qos", type=int, choices=[0, 1], default=0)
    p.add_argument("--plant", default="plant1")
    p.add_argument("--unit-prefix", default="unit")
    p.add_argument("--fault-units", type=int, default=0, help="units 1..N get periodic faults")
    p.add_argument("--fault-every", type=int, default=200, help="steps between fault starts")
    p.add_argument("--fault-len", type=int, default=40, help="steps per fault")
    p.add_argument("--fault-sensor", default="bearing_temperature")
    p.add_argument("--fault-offset", type=float, default=35.0, help="added during a fault")
    p.add_argument("--burst", action="store_true", help="every unit at the same instant")
    p.add_argument("--width", type=int, default=8, help="sensors per unit")
    p.add_argument("--backfill", type=int, default=0, help="steps of history written first")
    p.add_argument("--backfill-rate", type=float, default=3000.0, help="msgs/s of the history")
    p.add_argument("--client-id")
    p.add_argument("--summary", type=Path, help="write the JSON summary here (else stdout)")
    return p


def start_loadgen(
    port: int,
    *,
    units: int,
    mode: str,
    rate: float,
    duration: float,
    summary: Path,
    cpus: set[int] | None = None,
    announce: bool = False,
    **options: Any,
) -> subprocess.Popen[str]:
    """Start ``loadgen.py`` in its own process, pinned to ``cpus``.

    ``options`` become flags (``fault_units=2`` → ``--fault-units 2``, ``burst=True`` →
    ``--burst``). With ``announce`` its stdout is a pipe whose first line says when publishing
    starts; otherwise it is discarded.
    """
    cmd = [
        sys.executable, str(Path(__file__).resolve()),
        "--port", str(port), "--units", str(units), "--mode", mode,
        "--rate", str(rate), "--duration", str(duration), "--summary", str(summary),
    ]  # fmt: skip
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):  # a switch: given when true
            cmd += [flag] if value else []
        else:
            cmd += [flag, str(value)]
    gen = subprocess.Popen(
        cmd, stdout=subprocess.PIPE if announce else subprocess.DEVNULL, text=True
    )
    pin_to_cpu(gen.pid, cpus)
    return gen


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = Plan(
        args.units, args.rate, args.mode, args.plant, args.unit_prefix, args.burst, args.width
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    summary = run(
        plan,
        args.host,
        args.port,
        args.duration,
        qos=args.qos,
        fault_units=args.fault_units,
        fault_every=args.fault_every,
        fault_len=args.fault_len,
        fault_sensor=args.fault_sensor,
        fault_offset=args.fault_offset,
        client_id=args.client_id,
        stop=stop,
        announce=args.summary is not None,
        backfill=args.backfill,
        backfill_rate=args.backfill_rate,
    )
    text = json.dumps(summary.to_dict())
    if args.summary:
        args.summary.write_text(text)
        print(
            f"loadgen: {summary.messages_sent} messages in "
            f"{summary.finished - summary.started:.1f}s ({summary.achieved_rate:,.0f}/s), "
            f"lag p99 {summary.lag_p99_ms} ms",
            flush=True,
        )
    else:
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
