"""The ingest ceiling: how many messages/s a bare receive loop takes on one core.

This is the yardstick for the agent's end-to-end figure: a process that does nothing but
receive from a real Mosquitto and parse each payload as JSON, three ways over the same
aiomqtt client: aiomqtt's ``async for message in client.messages``; paho's ``on_message``
callback (``/paho``); and the agent's direct receive path (``/direct``, the callback plus a
socket reader that takes a batch of packets per loop wake-up). The receiver runs in its
own process (pinned to a core of its own with ``--pin``); the load generator (loadgen.py)
is another. Offered rates climb a ladder and
the ceiling is the highest rate the loop took, by the same rule as the agent's stages.
MQTT 3.1.1 and 5 are measured apart: paho decodes a Properties object per MQTT 5 message.

    python benchmarks/ingest_ceiling.py [--seconds 4] [--cases orjson/3.1.1,orjson/5/direct]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
import procstat
import results

from harness.broker import running_broker
from harness.net import HOST
from harness.process import pin_to_cpu, stop_process

HERE = Path(__file__).resolve().parent


#: How the receiver takes messages: aiomqtt's ``async for``; paho's ``on_message`` callback
#: on the same aiomqtt client (aiomqtt's socket reader: one packet per loop wake-up); and the
#: agent's direct path (:mod:`edge_agent.daemon.mqtt.direct`: one large read per wake-up,
#: cut into packets and decoded by the agent's own framer).
LOOPS = ("aiomqtt", "paho", "direct")


async def receive(
    port: int,
    parser: str,
    window: float,
    out: Path,
    max_seconds: float,
    protocol: str = "3.1.1",
    loop: str = "aiomqtt",
) -> None:
    """Subscribe; from the first message on, receive and parse for ``window`` seconds.

    ``aiomqtt`` is the plain ``async for message in client.messages`` of aiomqtt's docs, with
    one timeout around the whole run (a timeout per message would cost a task each). The
    callback loops (``paho``, ``direct``) parse in paho's ``on_message``; aiomqtt still
    connects and subscribes.
    """
    import aiomqtt
    import orjson

    from edge_agent.daemon.mqtt.direct import DirectReader

    parse: Any = {"none": lambda b: None, "json": json.loads, "orjson": orjson.loads}[parser]
    state = {"count": 0, "first": 0.0, "last": 0.0, "cpu0": 0.0}
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    done = asyncio.Event()
    end = 0.0

    def took(payload: Any) -> None:
        nonlocal end
        parse(payload if isinstance(payload, bytes | bytearray) else str(payload).encode())
        now = time.perf_counter()
        count = int(state["count"])
        if count == 0:
            end = now + window
            state["first"], state["cpu0"] = now, time.process_time()
        state["count"], state["last"] = count + 1, now
        if now >= end:
            done.set()

    async def consume(client: aiomqtt.Client) -> None:
        if loop != "aiomqtt":
            await done.wait()
            return
        async for message in client.messages:
            took(message.payload)
            if done.is_set():
                return

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        if not done.is_set():
            took(message.payload)

    client = aiomqtt.Client(HOST, port, identifier=f"ceiling-{parser}-{loop}", protocol=version)
    if loop == "paho":
        client._client.on_message = on_message
    reader = None
    if loop == "direct":
        reader = DirectReader(
            client,
            lambda _topic, payload, _retain, _arrival: None if done.is_set() else took(payload),
            hold_max=10**6,
        )
        reader.install()
    async with client:
        await client.subscribe("plant/#", qos=1)
        if reader is not None:
            reader.release()
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consume(client), max_seconds)
    cpu = time.process_time() - state["cpu0"]
    count = int(state["count"])
    busy = max(1e-9, state["last"] - state["first"])
    out.write_text(
        json.dumps(
            {
                "parser": parser,
                "protocol": protocol,
                "loop": loop,
                "messages": count,
                "busy_seconds": busy,
                "rate": (count - 1) / busy if count > 1 else 0.0,
                "cpu_percent": 100.0 * cpu / busy,
                "per_cpu_second": (count - 1) / cpu if cpu > 0 else None,
            }
        )
    )


def split_case(case: str) -> tuple[str, str, str]:
    """``parser/protocol[/loop]`` -> (parser, protocol, loop); defaults 3.1.1 and aiomqtt."""
    parser, _, rest = case.partition("/")
    protocol, _, loop = rest.partition("/")
    loop = loop or "aiomqtt"
    if loop not in LOOPS:
        raise SystemExit(f"unknown receive loop {loop!r} in {case!r}: one of {LOOPS}")
    return parser, protocol or "3.1.1", loop


def measure(
    case: str, seconds: float, rate: float, units: int, mode: str, work: Path
) -> dict[str, Any]:
    """One receiver run; ``case`` is ``parser/protocol[/loop]``, e.g. ``orjson/5/direct``."""
    parser, protocol, loop = split_case(case)
    agent_cpus, other_cpus = procstat.cpu_split()
    with running_broker(work / f"broker-{parser}-{protocol}-{loop}", cpus=other_cpus) as broker:
        out = work / f"recv-{parser}-{protocol}-{loop}.json"
        recv = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "ingest_ceiling.py"),
                "receive",
                "--port",
                str(broker.port),
                "--parser",
                parser,
                "--protocol",
                protocol,
                "--loop",
                loop,
                "--out",
                str(out),
                "--window",
                str(seconds),
                "--max-seconds",
                str(seconds + 60),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        pin_to_cpu(recv.pid, agent_cpus)
        try:
            assert recv.stdout is not None
            line = recv.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"receiver did not start: {line!r}")
            summary_path = work / f"loadgen-{parser}-{protocol}-{loop}.json"
            gen = loadgen.start_loadgen(
                broker.port, units=units, mode=mode, rate=rate, duration=seconds + 2,
                summary=summary_path, cpus=other_cpus,
            )  # fmt: skip
            recv.wait(timeout=seconds + 120)
            gen.wait(timeout=seconds + 120)
        finally:
            stop_process(recv)
        sent = json.loads(summary_path.read_text())
        got = json.loads(out.read_text())
    return {
        **got,
        "offered_rate": sent["achieved_rate"],
        "messages_sent": sent["messages_sent"],
        "loadgen_lag_p99_ms": sent["lag_p99_ms"],
        "mode": mode,
        "pinned_to_one_core": agent_cpus is not None,
    }


#: Offered rates tried per case, in order; the ladder stops at the first the loop misses.
LADDER = (2000, 3000, 4000, 5000, 6000, 7500, 10000, 12500, 15000, 20000)


def kept_up(row: dict[str, Any]) -> bool:
    """The receiver took what was offered (3 % slack for the load generator's own jitter)."""
    return bool(row["rate"] >= 0.97 * row["offered_rate"])


def ladder(
    case: str, seconds: float, rates: list[int], units: int, mode: str, work: Path
) -> dict[str, Any]:
    """Offer each rate in turn; the ceiling is the highest the receiver kept up with.

    Offering far more than it takes would measure something else: aiomqtt's incoming queue
    is unbounded, so the backlog (and the garbage collector's work on it) would grow.
    """
    rungs = []
    for rate in rates:
        row = measure(case, seconds, rate, units, mode, work / f"{rate}")
        row["kept_up"] = kept_up(row)
        rungs.append(row)
        print(
            f"  {case:13s} offered {row['offered_rate']:8,.0f}/s: received "
            f"{row['rate']:8,.0f}/s, CPU {row['cpu_percent']:5.1f}%, kept up "
            f"{row['kept_up']}",
            flush=True,
        )
        if not row["kept_up"]:
            break
    ok = [r for r in rungs if r["kept_up"]]
    best = max(ok, key=lambda r: r["rate"]) if ok else max(rungs, key=lambda r: r["rate"])
    parser, protocol, loop = split_case(case)
    return {
        "parser": parser,
        "protocol": protocol,
        "loop": loop,
        "ceiling": best["rate"],
        "ceiling_kept_up": bool(ok),
        "cpu_percent": best["cpu_percent"],
        "per_cpu_second": best["per_cpu_second"],
        "max_received": max(r["rate"] for r in rungs),
        "rungs": rungs,
    }


def case_name(row: dict[str, Any]) -> str:
    """``parser/protocol`` for the aiomqtt loop (the names earlier results used), else
    ``parser/protocol/loop``."""
    name = f"{row['parser']}/{row['protocol']}"
    return name if row["loop"] == "aiomqtt" else f"{name}/{row['loop']}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.pin:
        os.environ["EDGE_BENCH_PIN"] = "1"
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    seconds = min(args.seconds, 1.5) if args.quick else args.seconds
    rates = [r for r in LADDER if r <= args.max_rate][: 2 if args.quick else None]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-ceiling-") as tmp:
        for case in cases:
            rows.append(
                ladder(
                    case, seconds, rates, args.units, args.mode, Path(tmp) / case.replace("/", "-")
                )
            )
    results.print_table(
        [
            "parser",
            "MQTT",
            "loop",
            "ceiling msgs/s",
            "CPU %",
            "msgs per CPU-second",
            "max received/s",
        ],
        [
            [
                r["parser"],
                r["protocol"],
                r["loop"],
                r["ceiling"],
                r["cpu_percent"],
                r["per_cpu_second"],
                r["max_received"],
            ]
            for r in rows
        ],
        "Bare receive loops (one process) against Mosquitto: highest offered rate taken",
    )
    # the reference stays the bare aiomqtt loop, orjson-class parsing over MQTT 5
    bare = [r for r in rows if r["loop"] == "aiomqtt"] or rows
    ref = next(
        (r for r in bare if r["parser"] == "orjson" and r["protocol"] == "5"),
        next((r for r in bare if r["parser"] == "orjson"), bare[-1] if bare else None),
    )
    result = {
        "settings": {
            "seconds": seconds,
            "ladder": rates,
            "units": args.units,
            "mode": args.mode,
            "subscription_qos": 1,
            "publish_qos": 0,
            "note": "ceiling = highest offered rate the loop took (>= 97 %); msgs per "
            "CPU-second = received / receiver CPU time at that rate",
        },
        "rows": rows,
        "ceiling_msgs_per_s": ref["ceiling"] if ref else None,
        "ceiling_msgs_per_cpu_second": ref["per_cpu_second"] if ref else None,
        "ceilings": {case_name(r): r["ceiling"] for r in rows},
    }
    if not args.no_write:
        print(f"\nwrote {results.write_result(args.name, result)}")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("receive", help="(internal) the receiver process")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--parser", choices=["none", "json", "orjson"], default="orjson")
    r.add_argument("--window", type=float, default=5.0, help="seconds to measure")
    r.add_argument("--protocol", choices=["3.1.1", "5"], default="3.1.1")
    r.add_argument("--loop", choices=LOOPS, default="aiomqtt")
    r.add_argument("--max-seconds", type=float, default=120.0)
    r.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per rung")
    p.add_argument("--max-rate", type=int, default=20000, help="highest rate of the ladder")
    p.add_argument("--pin", action="store_true", help="pin the receiver to a core of its own")
    p.add_argument("--units", type=int, default=100)
    p.add_argument("--mode", choices=["telemetry", "sensors"], default="sensors")
    p.add_argument(
        "--cases",
        default=",".join(
            f"orjson/{v}{lp}" for v in ("3.1.1", "5") for lp in ("", "/paho", "/direct")
        ),
        help="comma list of PARSER/PROTOCOL[/LOOP]: parser none|json|orjson, MQTT 3.1.1|5, "
        "loop aiomqtt (default)|paho|direct",
    )
    p.add_argument("--quick", action="store_true", help="two 1.5 s rungs per case")
    p.add_argument("--name", default="ingest_ceiling")
    p.add_argument("--no-write", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "receive":
        asyncio.run(
            receive(
                args.port,
                args.parser,
                args.window,
                args.out,
                args.max_seconds,
                args.protocol,
                args.loop,
            )
        )
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
