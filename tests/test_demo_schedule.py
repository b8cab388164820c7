"""The demo's plant through the shipped model set: alerts only where a fault is.

The demo's own simulated plant (``demo_plan``: the same streams the demo publishes) runs
through the agent's engine with the demo's settings, for several seeds and with healthy
units beside the faulted ones. An operator watching the demo must see alerts only from
units with a scheduled fault, and only from its start until the windows have moved past
its end — never on a healthy unit, never before a fault starts.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from edge_agent.metrics import Metrics
from edge_agent.model_loading import load_model_set
from edge_agent.pipeline.engine import Engine
from edge_agent.tools.demo import DEMO_FAULTS, demo_plan, demo_settings
from edge_agent.tools.publisher import step_messages, unit_streams

REPO = Path(__file__).resolve().parents[1]
UNITS = ["unit1", "unit2", "unit3", "unit4", "unit5"]  # unit4, unit5: no faults
LIVE_STEPS = 400  # the last scheduled fault ends at step 320
START = 1_767_225_600.0

pytestmark = pytest.mark.slow


class Quiet:
    def debug(self, *a: object, **k: object) -> None: ...

    info = warning = debug


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_demo_alerts_come_only_from_faulted_units_during_their_faults(
    seed: int, tmp_path: Path
) -> None:
    settings = demo_settings("127.0.0.1", 1883, "5", UNITS, REPO / "models", tmp_path, 9108)
    engine = Engine(settings, load_model_set(settings, None), Metrics(), Quiet())
    plan = demo_plan(settings.plant, UNITS, seed=seed)
    streams = unit_streams(plan, START)
    alerts = []
    steps = plan.backfill + LIVE_STEPS
    for _ in range(steps):
        rows = [next(s) for s in streams]
        for unit, (ts, values, _label) in zip(UNITS, rows, strict=True):
            for topic, payload in step_messages(plan, unit, ts, values):
                engine.handle_message(topic, payload, ts)
        alerts += engine.tick(rows[0][0] + 0.01).alerts
    window = engine.window
    faults = {u: [(e.start + plan.backfill, e.end + plan.backfill) for e in es]
              for u, es in plan.faults.items()}  # fmt: skip
    raised = [orjson.loads(a.to_json()) for a in alerts if a.state == "raised"]
    assert raised, "the demo's faults raised nothing"
    for a in raised:
        step = round(engine_ts(a) - START)
        spans = faults.get(a["unit"], [])
        assert any(lo <= step <= hi + window for lo, hi in spans), (
            f"seed {seed}: {a['kind']} alert on {a['unit']} at step {step}, faults there: {spans}"
        )
    # every faulted unit of the schedule is seen (event recall of the demo itself)
    assert {a["unit"] for a in raised if a["kind"] == "anomaly"} == {
        s.split("/")[0] for s in DEMO_FAULTS
    }


def engine_ts(alert: dict[str, object]) -> float:
    from edge_agent.pipeline.timestamps import parse_table_timestamp

    ts = parse_table_timestamp(str(alert["ts"]))
    assert ts is not None
    return ts
