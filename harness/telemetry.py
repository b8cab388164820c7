"""Simulated readings of a settled thermal unit, published as the agent's telemetry messages.

Readings are published with past timestamps in a fast burst; the agent's per-unit event
clock closes such steps by completeness, so a 300-step scenario takes about a second.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np
import orjson

from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names
from edge_agent.tools.simulator import FaultEvent, ThermalUnitSimulator
from harness.mqtt_client import MqttClient

SENSORS = sensor_names(THERMAL_UNIT_SENSORS)
PLANT = "p1"

#: Steps simulated and dropped first (see edge_agent.tools.publisher.SimulationPlan.burn_in).
BURN_IN = 1800


def simulated_steps(
    n_steps: int,
    faults: Iterable[FaultEvent] = (),
    seed: int = 0,
    start: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timestamps, values, labels) of a settled simulated unit, ending ~now unless ``start``.

    The simulator starts away from equilibrium, so ``BURN_IN`` steps are simulated first and
    dropped (as the publisher does); fault steps count from the first returned step.
    """
    if start is None:
        start = float(int(time.time()) - n_steps - 5)
    shifted = [
        FaultEvent(f.kind, f.start + BURN_IN, f.end + BURN_IN, f.sensor, f.magnitude)
        for f in faults
    ]
    result = ThermalUnitSimulator(
        seed=seed, day_seconds=3600.0, start_time=start - BURN_IN
    ).generate(n_steps + BURN_IN, shifted)
    keep = slice(BURN_IN, None)
    return result.timestamps[keep], result.values[keep], result.labels[keep]


def telemetry_payload(ts: float, row: Sequence[float]) -> bytes:
    return orjson.dumps(
        {"ts": ts, "values": dict(zip(SENSORS, (float(v) for v in row), strict=True))}
    )


def publish_telemetry(
    client: MqttClient,
    unit: str,
    timestamps: np.ndarray,
    values: np.ndarray,
    plant: str = PLANT,
    qos: int = 1,
) -> None:
    topic = f"plant/{plant}/{unit}/telemetry"
    for ts, row in zip(timestamps, values, strict=True):
        client.publish(topic, telemetry_payload(float(ts), row), qos=qos)
