"""benchmarks/historian_plant.py: the export has the quirks it promises, and its quickest
mode runs ``edge-train train`` → ``edge-agent replay`` for real and accounts for every fault.

Apart from test_benchmarks_smoke.py because it trains (TensorFlow); the figures of the quick
mode judge nothing, so only what must hold on any model set is asserted.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import historian_export  # noqa: E402
import historian_plant  # noqa: E402


def test_the_export_has_outages_blank_cells_and_coarse_columns(tmp_path: Path) -> None:
    export = historian_export.healthy_export(5, "2026-01-05", hours=6)
    path = tmp_path / "x.csv"
    written = export.write_csv(path)
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert written == len(rows) == export.steps - int(export.missing_rows.sum())
    assert int(export.missing_rows.sum()) == 93  # a 15-minute and a 30 s outage
    blank = sum(1 for r in rows if r["fw_flow_tph"] == "")
    assert 0 < blank <= 18  # three 60 s spells of empty cells (fewer inside an outage)
    assert {r["aux_pump_on"] for r in rows} == {"1"}
    assert all(float(r["steam_temp_c"]).is_integer() for r in rows)
    valve = np.array([float(r["valve_pos_pct"]) for r in rows])
    assert np.all(valve * 2 == np.round(valve * 2))  # 0.5 % steps
    assert np.mean(np.diff(valve) == 0) > 0.95  # the deadband holds it


def test_faults_are_labelled_where_injected_and_never_in_an_outage() -> None:
    healthy = historian_export.healthy_export(3, "2026-01-07", hours=24)
    faulty = historian_export.with_faults(healthy, seed=3)
    assert [e[0] for e in faulty.events] == list(historian_export.FAULTS)
    for fault, a, b in faulty.events:
        assert faulty.labels[a:b].all() and not faulty.missing_rows[a:b].any()
        changed = faulty.values[fault.sensor][a:b] != healthy.values[fault.sensor][a:b]
        assert changed.mean() > 0.9
    assert int(faulty.labels.sum()) == sum(b - a for _f, a, b in faulty.events)
    for name in historian_export.COLUMNS:  # outside the events nothing moved
        outside = ~faulty.labels
        np.testing.assert_array_equal(faulty.values[name][outside], healthy.values[name][outside])


@pytest.mark.slow
def test_quick_mode_trains_with_no_options_and_judges_every_fault() -> None:
    r = historian_plant.run(4.0, quick=True, fit_days=[1])
    (fit,) = r["fits"]
    t = fit["training"]
    assert t["timestamp_column"] == "time" and t["constant_columns"] == ["aux_pump_on"]
    assert "aux_pump_on" not in t["sensors"] and len(t["sensors"]) == 6
    assert t["gaps"] >= 2  # at least both outages were stepped over, not refused
    q = fit["healthy_day"]
    assert q["alarms_raised"].get("sensor_stale", 0) >= 1  # the 15-minute outage is seen
    assert q["detection_alarms"] == sum(
        q["alarms_raised"].get(k, 0) for k in ("anomaly", "bad_quality")
    )
    shares = (q["scored_outside_envelope_percent"], q["flagged_percent_inside_envelope"])
    assert all(v is None or 0 <= v <= 100 for v in shares)
    f = fit["faulted_day"]
    assert [e["kind"] for e in f["events"]] == [x.kind for x in historian_export.FAULTS]
    assert f["detected"] == sum(e["detected"] for e in f["events"])
    assert all((e["delay_seconds"] is None) != e["detected"] for e in f["events"])
    for e in f["events"]:  # raised before the fault began: "detected" at once, and said so
        assert e["already_raised_at_start"] == (e["delay_seconds"] == 0.0)
    assert any("healthy day" in line for line in historian_plant.describe(fit))
