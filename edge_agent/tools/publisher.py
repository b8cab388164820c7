"""Publish simulated plant readings to a broker: `edge-agent simulate` and the demo.

Readings are paced by their own timestamps against the wall clock, so the agent sees
a live plant. ``backfill`` steps of history are sent at once first (timestamps in the
past), so the agent's 60-step windows fill in seconds instead of a minute.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

import aiomqtt
import numpy as np
import orjson

from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names
from edge_agent.tools.plants import REFERENCE_DESIGN, UnitDesign
from edge_agent.tools.simulator import FAULT_KINDS, FaultEvent, ThermalUnitSimulator
from edge_agent.topics import fill

_FAULT_RE = re.compile(
    r"^(?P<kind>[a-z_]+)@(?P<start>\d+)\+(?P<length>\d+)(?::(?P<sensor>\w+))?"
    r"(?:\*(?P<magnitude>\d+(?:\.\d+)?))?$"
)


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` (or ``host:port``) → (host, port)."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in {"mqtt", "tcp"} or not parsed.hostname:
        raise ValueError(f"broker URL must look like mqtt://host:port, got {url!r}")
    return parsed.hostname, parsed.port or 1883


def parse_fault(spec: str) -> tuple[str | None, FaultEvent]:
    """``[unit/]kind@start+length[:sensor][*magnitude]``, start/length in steps after the backfill.

    ``unit2/spike@30+10:steam_pressure*2`` — a double-strength spike on unit2's steam pressure
    from step 30 for 10 steps.
    """
    unit, _, rest = spec.rpartition("/")
    m = _FAULT_RE.match(rest)
    if not m:
        raise ValueError(
            f"fault {spec!r} must look like [unit/]kind@start+length[:sensor][*magnitude]"
        )
    if m["kind"] not in FAULT_KINDS:
        raise ValueError(f"fault kind {m['kind']!r} unknown; known: {', '.join(FAULT_KINDS)}")
    start = int(m["start"])
    magnitude = float(m["magnitude"]) if m["magnitude"] else 1.0
    event = FaultEvent(m["kind"], start, start + int(m["length"]), m["sensor"], magnitude)
    return (unit or None), event


@dataclass
class SimulationPlan:
    plant: str = "plant1"
    units: Sequence[str] = ("unit1",)
    mode: Literal["telemetry", "sensors"] = "telemetry"
    step_seconds: float = 1.0
    backfill: int = 60
    #: faults per unit; a None key applies to every unit. Starts count from the first live step.
    faults: dict[str | None, list[FaultEvent]] = field(default_factory=dict)
    seed: int = 0
    day_seconds: float = 3600.0
    #: Steps simulated before the first published one and dropped: the simulator starts
    #: away from equilibrium, a real plant the agent connects to is already running.
    burn_in: int = 1800
    qos: int = 1
    sensor_topic: str = "plant/{plant}/{unit}/sensors/{sensor}"
    telemetry_topic: str = "plant/{plant}/{unit}/telemetry"
    #: Every unit's design (a real plant's: :func:`edge_agent.tools.plants.unit_design`).
    design: UnitDesign = REFERENCE_DESIGN


def unit_streams(plan: SimulationPlan, start: float) -> list[Iterator[tuple[float, Any, int]]]:
    """Per unit, its endless (ts, values, label) rows from ``start`` (the publisher's data)."""
    streams: list[Iterator[tuple[float, Any, int]]] = []
    for i, unit in enumerate(plan.units):
        events = [*plan.faults.get(None, []), *plan.faults.get(unit, [])]
        lead = plan.backfill + plan.burn_in
        shifted = [
            FaultEvent(e.kind, e.start + lead, e.end + lead, e.sensor, e.magnitude) for e in events
        ]
        sim = ThermalUnitSimulator(
            seed=plan.seed + i,
            step_seconds=plan.step_seconds,
            day_seconds=plan.day_seconds,
            start_time=start - plan.burn_in * plan.step_seconds,
            design=plan.design,
        )
        stream = sim.stream(sorted(shifted, key=lambda e: e.start))
        streams.append(itertools.islice(stream, plan.burn_in, None))
    return streams


def step_messages(
    plan: SimulationPlan, unit: str, ts: float, values: Any
) -> list[tuple[str, bytes]]:
    """The MQTT messages of one unit's step, as the topic contract defines them."""
    names = sensor_names(THERMAL_UNIT_SENSORS)
    row = np.asarray(values, dtype=float).tolist()
    if plan.mode == "telemetry":
        topic = fill(plan.telemetry_topic, plant=plan.plant, unit=unit)
        return [(topic, orjson.dumps({"ts": ts, "values": dict(zip(names, row, strict=True))}))]
    return [
        (
            fill(plan.sensor_topic, plant=plan.plant, unit=unit, sensor=name),
            orjson.dumps({"ts": ts, "value": value}),
        )
        for name, value in zip(names, row, strict=True)
    ]


async def publish_simulation(
    client: aiomqtt.Client,
    plan: SimulationPlan,
    *,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    on_step: Callable[[int, list[int]], None] | None = None,
) -> int:
    """Publish until ``duration`` seconds of live data, or ``stop`` is set; return messages sent.

    ``on_step(step, labels)`` gets the *live* step index, the one fault starts count in
    (``@20`` starts at step 20): the backfill's history steps are -backfill … -1.
    """
    now = time.time()
    start = now - plan.backfill * plan.step_seconds
    streams = unit_streams(plan, start)
    sent = 0
    step = 0
    end = None if duration is None else now + duration
    while stop is None or not stop.is_set():
        rows = [next(s) for s in streams]
        ts = rows[0][0]
        if end is not None and ts > end:
            break
        wait = ts - time.time()
        if wait > 0:
            if stop is None:
                await asyncio.sleep(wait)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                    break
                except TimeoutError:
                    pass
        for unit, (row_ts, values, _label) in zip(plan.units, rows, strict=True):
            for topic, payload in step_messages(plan, unit, row_ts, values):
                await client.publish(topic, payload, qos=plan.qos)
                sent += 1
        if on_step is not None:
            on_step(step - plan.backfill, [r[2] for r in rows])
        step += 1
    return sent


class BrokerUnavailable(Exception):
    """The broker could not be reached or went away (the user can fix that)."""


async def simulate_to_broker(
    host: str,
    port: int,
    plan: SimulationPlan,
    *,
    client_id: str,
    duration: float | None = None,
    on_step: Callable[[int, list[int]], None] | None = None,
) -> int:
    """Connect, :func:`publish_simulation`, disconnect; ``BrokerUnavailable`` on MQTT errors.

    Keeps aiomqtt out of :mod:`edge_agent.cli` (only ``daemon/mqtt`` and the tools use it).
    """
    try:
        async with aiomqtt.Client(host, port, identifier=client_id) as client:
            return await publish_simulation(client, plan, duration=duration, on_step=on_step)
    except aiomqtt.MqttError as exc:
        raise BrokerUnavailable(str(exc)) from exc
