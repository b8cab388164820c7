"""Load generator: simulated plant readings at a fixed message rate, over raw MQTT 3.1.1.

Runs as its own process so that it never shares an interpreter with what it measures. It
speaks MQTT over a plain socket (CONNECT, PUBLISH, PUBACK, DISCONNECT are a few bytes
each) and writes every due message of a millisecond in one ``sendall``: a Python MQTT
client would be the bottleneck long before the agent.

Timing contract (the latency measurements rely on it): each unit publishes one step every
``step_seconds``. Step ``k`` of unit ``u`` (of ``U``) is due at the *nominal* time
``k * step + (u + 0.5) / U * step`` — inside step ``k``'s interval, units spread evenly
over it — and all of that step's messages (one telemetry message, or one per sensor) carry
``ts`` = that nominal time and are written to the socket together, as soon as it is due.
``lag`` is how late that happened; a subscriber can recover the nominal publish time of
any step from (unit, step index) with :func:`nominal_time`.

    python benchmarks/loadgen.py --port 1883 --units 100 --mode telemetry --rate 10000 \\
        --duration 10 [--qos 0|1] [--fault-units 2] [--summary out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the repo: the harness
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.net import HOST
from harness.process import pin_to_cpu
from harness.raw_mqtt import DISCONNECT_PACKET, publish_packet, raw_connect

SENSORS = (
    "steam_temperature", "steam_pressure", "feedwater_flow", "turbine_vibration", "load",
    "flue_gas_temperature", "condenser_vacuum", "bearing_temperature",
)  # fmt: skip


#: Longer runs cycle through this many simulated steps per unit (bounded memory).
MAX_SERIES_STEPS = 100_000


@dataclass(frozen=True)
class Plan:
    """What to publish: ``rate`` messages/s spread over ``units`` units."""

    units: int
    rate: float
    mode: str = "telemetry"  # or "sensors"
    plant: str = "plant1"
    unit_prefix: str = "unit"

    @property
    def messages_per_step(self) -> int:
        return 1 if self.mode == "telemetry" else len(SENSORS)

    @property
    def step_us(self) -> int:
        """Step period in whole microseconds (so the agent's step grid has no rounding)."""
        return max(2 * self.units, round(1e6 * self.units * self.messages_per_step / self.rate))

    @property
    def step_seconds(self) -> float:
        return self.step_us / 1e6

    @property
    def readings_per_message(self) -> int:
        return len(SENSORS) if self.mode == "telemetry" else 1

    def unit_name(self, u: int) -> str:
        return f"{self.unit_prefix}{u + 1}"


def offset_us(plan: Plan, u: int) -> int:
    return (2 * u + 1) * plan.step_us // (2 * plan.units)


def nominal_time(plan: Plan, step_index: int, u: int) -> float:
    """When unit ``u``'s messages for step ``step_index`` were due (and their ``ts``)."""
    return (step_index * plan.step_us + offset_us(plan, u)) / 1e6


def step_index_of(plan: Plan, ts: float) -> int:
    """The step a (possibly millisecond-truncated) step-start timestamp belongs to."""
    return (
        math.floor(ts / plan.step_seconds + 0.5)
        if plan.step_us >= 4000
        else math.floor(ts / plan.step_seconds)
    )


# ------------------------------------------------------------------------------ publishing


class RawPublisher:
    """One MQTT 3.1.1 connection that only publishes; reconnects on demand."""

    def __init__(self, host: str, port: int, client_id: str, qos: int) -> None:
        self.host, self.port, self.client_id, self.qos = host, port, client_id, qos
        self.sock: socket.socket | None = None
        self.acked = 0
        self._next_id = 1
        self._reader: threading.Thread | None = None

    def connect(self, timeout: float = 5.0) -> None:
        sock = raw_connect(
            self.port,
            self.client_id,
            host=self.host,
            keepalive=0,
            sockopts=[
                (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
                (socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024),
            ],
            timeout=timeout,
        )
        sock.settimeout(None)
        self.sock = sock
        if self.qos:
            self._reader = threading.Thread(target=self._read_acks, args=(sock,), daemon=True)
            self._reader.start()

    def _read_acks(self, sock: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            n = len(buf) // 4  # PUBACK is always 4 bytes: 0x40 0x02 id id
            self.acked += n
            buf = buf[n * 4 :]

    def packet(self, topic: bytes, payload: bytes) -> bytes:
        if not self.qos:
            return publish_packet(topic, payload)
        pid = self._next_id
        self._next_id = pid % 65535 + 1
        return publish_packet(topic, payload, 1, pid)

    def send(self, data: bytes) -> None:
        if self.sock is None:
            raise ConnectionError("not connected")
        self.sock.sendall(data)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendall(DISCONNECT_PACKET)
                self.sock.shutdown(socket.SHUT_WR)
            if self._reader is not None and self.qos:
                self._reader.join(timeout=5)
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


# ------------------------------------------------------------------------------ values


def unit_series(
    plan: Plan,
    n_steps: int,
    fault_units: int = 0,
    fault_every: int = 200,
    fault_len: int = 40,
    fault_sensor: str = "bearing_temperature",
    fault_offset: float = 35.0,
) -> list[np.ndarray]:
    """Readings per unit: up to 8 simulator series (healthy), shared round-robin by units.

    Units ``0..fault_units-1`` get a step fault: ``fault_offset`` added to ``fault_sensor``
    for ``fault_len`` steps every ``fault_every`` steps (first at ``fault_every``), clipped
    to the sensor's valid range, so the models and a configured limit both see it.
    """
    from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS
    from edge_agent.tools.simulator import ThermalUnitSimulator

    n = max(n_steps, 256)
    bases = [
        np.asarray(
            ThermalUnitSimulator(seed=s, day_seconds=3600.0).generate(n).values, dtype=np.float64
        )
        for s in range(min(8, plan.units))
    ]
    col = SENSORS.index(fault_sensor)
    spec = THERMAL_UNIT_SENSORS[col]
    out = []
    for u in range(plan.units):
        values = bases[u % len(bases)]
        if u < fault_units:
            values = values.copy()
            for start in range(fault_every, n, fault_every):
                values[start : start + fault_len, col] += fault_offset
            values[:, col] = np.clip(values[:, col], spec.lo, spec.hi)
        out.append(values)
    return out


def fault_steps(n_steps: int, fault_every: int, fault_len: int) -> int:
    """How many fault episodes a unit with faults goes through in ``n_steps`` steps."""
    return len(range(fault_every, n_steps, fault_every)) if fault_every > 0 else 0


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
) -> Summary:
    """Publish for ``duration`` seconds (or until ``stop``); return the summary."""
    step_us = plan.step_us
    n_steps_total = min(MAX_SERIES_STEPS, int(duration * 1e6 / step_us) + 2)
    series = unit_series(
        plan, n_steps_total, fault_units, fault_every, fault_len, fault_sensor, fault_offset
    )
    # Topics are fixed; payloads are serialised as they are sent (a few µs each), so a long
    # run needs no more memory than its float series.
    if plan.mode == "telemetry":
        topics = [
            [f"plant/{plan.plant}/{plan.unit_name(u)}/telemetry".encode()]
            for u in range(plan.units)
        ]
    else:
        topics = [
            [f"plant/{plan.plant}/{plan.unit_name(u)}/sensors/{name}".encode() for name in SENSORS]
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
    now_us = int(time.time() * 1e6)
    first_step = now_us // step_us + 1  # start at the next step boundary
    summary.first_step = first_step
    end_us = now_us + int(duration * 1e6)
    lags: list[float] = []
    k, u = first_step, 0
    started = time.time()
    if announce:
        print(f"publishing {started:.6f}", flush=True)
    summary.started = started
    n_series = n_steps_total
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
            ts = b'{"ts":' + repr(due_us / 1e6).encode()
            values = series[u][(k - first_step) % n_series].tolist()
            if telemetry:
                body = b',"values":' + orjson.dumps(dict(zip(SENSORS, values, strict=True)))
                chunk.append(pub.packet(topics[u][0], ts + body + b"}"))
            else:
                for topic, v in zip(topics[u], values, strict=True):
                    chunk.append(pub.packet(topic, ts + b',"value":' + orjson.dumps(v) + b"}"))
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
            summary.messages_sent += n_msgs
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
    summary.acked = pub.acked
    summary.readings_sent = summary.messages_sent * plan.readings_per_message
    elapsed = max(1e-9, summary.finished - started)
    summary.achieved_rate = summary.messages_sent / elapsed
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

    ``options`` become flags (``fault_units=2`` → ``--fault-units 2``). With ``announce`` its
    stdout is a pipe whose first line says when publishing starts; otherwise it is discarded.
    """
    cmd = [
        sys.executable, str(Path(__file__).resolve()),
        "--port", str(port), "--units", str(units), "--mode", mode,
        "--rate", str(rate), "--duration", str(duration), "--summary", str(summary),
    ]  # fmt: skip
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    gen = subprocess.Popen(
        cmd, stdout=subprocess.PIPE if announce else subprocess.DEVNULL, text=True
    )
    pin_to_cpu(gen.pid, cpus)
    return gen


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = Plan(args.units, args.rate, args.mode, args.plant, args.unit_prefix)
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
