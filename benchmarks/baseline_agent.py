"""The seed design as a process: aiomqtt in, Keras ``predict`` + sklearn on every message.

This is what the project replaces, written the straightforward way so the comparison is
measured rather than assumed: per message, parse the JSON, update the unit's window of the
last ``window`` rows, and once the window is full run sklearn ``decision_function`` on its
features and Keras ``predict`` on the window. The models are the native Keras/sklearn
models of the same shapes as the agent's model set (see ``seed_models.native_models``).

It prints ``ready`` once the models are loaded and subscribed, and writes its counters to
``--out`` (JSON) every second and on exit (SIGTERM/SIGINT).

    python benchmarks/baseline_agent.py --port 1883 --models DIR --out stats.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_sets
import procstat
import seed_models
import timing

from harness.net import HOST


class Stats:
    def __init__(self) -> None:
        self.started = time.time()
        self.ready_at: float | None = None
        self.received = 0
        self.scored = 0
        self.first_scored: float | None = None
        self.last_scored: float | None = None
        #: (time, scored) once per second, for the saturated rate between two points.
        self.samples: list[tuple[float, int]] = []
        self.latencies_ms: list[float] = []

    def to_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "pid": os.getpid(),
            "started": self.started,
            "ready_at": self.ready_at,
            "received": self.received,
            "scored": self.scored,
            "first_scored": self.first_scored,
            "last_scored": self.last_scored,
            "samples": self.samples,
            "latency_p50_ms": timing.percentile(lat, 50),
            "latency_p99_ms": timing.percentile(lat, 99),
            "rss_mb": procstat.proc_rss_mb(os.getpid()),
        }


def load_models(models: Path) -> tuple[Any, Any, Any, int]:
    """(sklearn pipeline, Keras model, feature spec, window) — the seed's in-process models."""
    from edge_agent.pipeline.features import FeatureSpec

    native = seed_models.native_models(models)
    man = model_sets.load_manifest_dict(models)
    return (
        native.load_iforest(),
        native.load_keras(),
        FeatureSpec.from_dict(man["features"]),
        int(man["window"]),
    )


async def serve(args: argparse.Namespace, stats: Stats, stop: asyncio.Event) -> None:
    import aiomqtt
    import numpy as np

    from edge_agent.pipeline.features import compute_features

    pipe, model, spec, window = load_models(args.models)
    sensors = list(spec.sensors)
    column = {s: i for i, s in enumerate(sensors)}
    # Warm both models once, as a long-running service would have.
    warm = np.zeros((1, window, len(sensors)), np.float32)
    pipe.decision_function(compute_features(warm, spec))
    model.predict(warm, verbose=0)
    rows: dict[str, list[float]] = {}
    windows: dict[str, deque[list[float]]] = {}
    async with aiomqtt.Client(HOST, args.port, identifier=f"baseline-{os.getpid()}") as c:
        await c.subscribe(f"plant/{args.plant}/+/telemetry", qos=1)
        await c.subscribe(f"plant/{args.plant}/+/sensors/+", qos=1)
        stats.ready_at = time.time()
        print("ready", flush=True)
        if args.ready_only:
            return
        it = c.messages.__aiter__()
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(it.__anext__(), 0.5)
            except TimeoutError:
                continue
            stats.received += 1
            parts = msg.topic.value.split("/")
            unit = parts[2]
            doc = json.loads(msg.payload)  # type: ignore[arg-type]
            row = rows.setdefault(unit, [0.0] * len(sensors))
            if parts[3] == "telemetry":
                for name, value in doc["values"].items():
                    row[column[name]] = float(value)
            else:
                row[column[parts[4]]] = float(doc["value"])
            win = windows.setdefault(unit, deque(maxlen=window))
            win.append(list(row))
            if len(win) == window:
                w = np.asarray(win, dtype=np.float32)[None]
                pipe.decision_function(compute_features(w, spec))
                model.predict(w, verbose=0)
                now = time.time()
                stats.scored += 1
                stats.first_scored = stats.first_scored or now
                stats.last_scored = now
                if "ts" in doc:
                    stats.latencies_ms.append(1000.0 * (now - float(doc["ts"])))


async def main_async(args: argparse.Namespace) -> None:
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def flush() -> None:
        while True:
            await asyncio.sleep(1.0)
            stats.samples.append((time.time(), stats.scored))
            if args.out:
                args.out.write_text(json.dumps(stats.to_dict()))

    flusher = asyncio.create_task(flush())
    try:
        await serve(args, stats, stop)
        if args.ready_only:
            await stop.wait()
    finally:
        flusher.cancel()
        stats.samples.append((time.time(), stats.scored))
        if args.out:
            args.out.write_text(json.dumps(stats.to_dict()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--models", type=Path, required=True, help="the agent's model set (shapes)")
    p.add_argument("--plant", default="plant1")
    p.add_argument("--out", type=Path, help="stats JSON, rewritten every second")
    p.add_argument(
        "--ready-only",
        action="store_true",
        help="load, subscribe, print ready, then idle until SIGTERM (footprint)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    asyncio.run(main_async(build_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
