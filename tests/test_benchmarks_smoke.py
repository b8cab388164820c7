"""Smoke tests of benchmarks/: each script's smallest mode runs for real, so none can rot.

They use a TensorFlow-free tiny model set (benchmarks/model_sets.py) and real Mosquitto brokers;
they check that the measurements add up (what was sent was received, what the agent scored
reached the subscriber), not how fast this machine is. The Keras half of the seed-design
baseline is left to `make bench` (importing TensorFlow alone would take this file's budget).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import baseline  # noqa: E402
import baseline_agent  # noqa: E402
import cost_curve  # noqa: E402
import end_to_end  # noqa: E402
import footprint  # noqa: E402
import inference  # noqa: E402
import ingest_ceiling  # noqa: E402
import installed_size  # noqa: E402
import latency  # noqa: E402
import load_plan  # noqa: E402
import loadgen  # noqa: E402
import model_sets  # noqa: E402
import run_all  # noqa: E402
import soak  # noqa: E402
import stage  # noqa: E402
import training_time  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_sets.build_tiny_model_set(tmp_path_factory.mktemp("bench-models"), trees=10)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_BENCH_CACHE", str(tmp_path / "cache"))


def test_inference_quick_measures_every_case(tiny_models: Path) -> None:
    args = inference.build_parser().parse_args(
        ["--models", str(tiny_models), "--quick", "--no-keras", "--seconds", "0.05", "--no-write"]
    )
    result = inference.run(args)
    cases = {(r["case"], r["batch"]) for r in result["iforest"]["rows"]}
    assert ("onnx ours (shipped file)", 16) in cases
    assert ("sklearn decision_function", 1) in cases
    assert all(r["per_call"]["calls"] >= 5 for r in result["iforest"]["rows"])
    # one graph node per tree and then some in skl2onnx's converter; a handful in ours
    info = result["iforest"]["info"]
    assert info["ours_nodes"] < 30 < info["skl2onnx_default_nodes"]
    assert result["summary"]["ratios"]["iforest: sklearn decision_function / ours, batch 1"] > 1
    assert {t["figure"] for t in result["targets"]} >= {"IF single row (ms)"}


def test_ingest_ceiling_receives_what_loadgen_sends(tmp_path: Path) -> None:
    row = ingest_ceiling.measure("orjson/3.1.1", 1.0, 2000.0, 10, "sensors", tmp_path)
    assert row["messages_sent"] > 1000
    assert 0 < row["messages"] <= row["messages_sent"]
    assert row["rate"] > 0 and row["per_cpu_second"] > 0


def test_loadgen_schedule_lands_in_the_right_steps() -> None:
    plan = load_plan.Plan(units=7, rate=1400.0, mode="sensors")
    assert plan.step_us == 40_000  # 7 units * 8 messages / 1400 msgs/s
    for u in range(plan.units):
        for k in (10, 11):
            t = load_plan.nominal_time(plan, k, u)
            assert k * plan.step_seconds <= t < (k + 1) * plan.step_seconds
            # the agent's scores carry the step start truncated to milliseconds
            assert load_plan.step_index_of(plan, int(k * plan.step_seconds * 1000) / 1000) == k


def test_end_to_end_stage_accounts_for_every_message(tiny_models: Path, tmp_path: Path) -> None:
    r = stage.run_stage(tiny_models, "sensors", 2, 400, 1.0, tmp_path, fault_units=1)
    assert r.messages_sent > 0
    assert r.lost_messages == 0 and r.lost_steps == 0, r.why_not
    assert r.steps_scored > 0
    assert r.scores_with_score >= r.steps_scored, r.why_not
    assert r.agent_ready_seconds is not None and r.agent_rss_mb is not None
    assert r.agent_errors == []


def test_footprint_closure_and_training_time(tiny_models: Path) -> None:
    agent = installed_size.closure_size(["edge-agent"])
    assert "onnxruntime" in agent["packages"] and "tensorflow-cpu" not in agent["packages"]
    assert agent["total_mb"] > 1
    args = training_time.build_parser().parse_args(["--models", str(tiny_models), "--no-write"])
    result = training_time.run(args)  # the tiny set recorded no timings: "not measured"
    assert [t["met"] for t in result["targets"]] == [None, None]


def test_orchestrators_parse_their_modes() -> None:
    steps = dict(run_all.plan(run_all_args(soak=True)))
    names = list(steps)
    assert names[0] == "inference" and names[-1] == "soak"
    assert {"latency", "cost_curve"} <= set(names)
    # the stride lever runs the end-to-end script into a results file of its own
    stride = steps[run_all.STRIDE_RUN]
    assert run_all.SCRIPT_OF[run_all.STRIDE_RUN] == "end_to_end"
    assert stride[stride.index("--stride") + 1] == "10"
    assert stride[stride.index("--name") + 1] == run_all.STRIDE_RUN
    parsed = end_to_end.build_parser().parse_args(stride)
    assert parsed.stride == 10
    assert parsed.stage == [end_to_end.parse_stage(s) for s in run_all.STRIDE_STAGES]
    assert baseline.saturated_rate([[0, 0], [1, 2], [2, 5], [3, 9]], 1, 3) == 3.5
    for module in (baseline, baseline_agent, footprint, soak, end_to_end, loadgen, latency):
        assert module.build_parser().format_help()


def run_all_args(**overrides: object) -> argparse.Namespace:
    defaults = {
        "quick": False,
        "rerun_training": False,
        "footprint_minutes": 3.0,
        "soak": False,
        "soak_minutes": 10.0,
        "only": None,
        "no_fresh_venv": False,
    }
    return argparse.Namespace(**{**defaults, **overrides})


def test_burst_plan_and_wide_units() -> None:
    plan = load_plan.Plan(units=125, rate=125.0, burst=True, width=32)
    assert plan.step_seconds == 1.0
    assert {load_plan.nominal_time(plan, 7, u) for u in range(plan.units)} == {7.5}
    names = plan.sensors
    assert len(set(names)) == 32 and names[:8] == load_plan.SENSORS
    assert names[8] == "steam_temperature_1" and names[-1] == "bearing_temperature_3"
    series = load_plan.unit_series(plan, 300, fault_units=1, fault_every=100, fault_len=10)
    assert series[0].shape == (300, 32)
    col = load_plan.SENSORS.index("bearing_temperature")
    assert series[0][100, col] > series[1][100, col] + 20  # the fault, on unit 1 only


def test_latency_quick_maps_every_score_to_its_publish(tiny_models: Path) -> None:
    args = latency.build_parser().parse_args(
        ["--models", str(tiny_models), "--quick", "--no-write"]
    )
    result = latency.run(args)
    assert [r["pattern"] for r in result["patterns"]] == [
        "burst",
        "burst-broker-nodelay",
        "steady",
        "steady-broker-nodelay",
    ]
    nodelay = latency.BROKER_NODELAY
    assert [r["broker_config"] for r in result["patterns"]] == ["", nodelay, "", nodelay]
    # the variants are reported, not targets
    assert [t["figure"] for t in result["targets"]] == [
        f"p99 reading->{what} at a subscriber, {p} (ms)"
        for p in ("burst", "steady")
        for what in ("score", "alert")
    ]
    for row in result["patterns"]:
        assert row["kept_up"], row["why_not"]
        s = row["reading_to_score_ms"]
        # 5 units at 10 steps/s for 4 s, less the 5 warm-up steps: about 175 scores
        assert s["n"] >= 100
        # a score mapped to the wrong step would be a step (100 ms) off, or negative
        assert 0 < s["p50"] <= s["p99"] <= s["max"] < 1000
        assert row["agent_reading_to_score_ms"]["p99"] is not None
    assert len(result["targets"]) == 4


def test_cost_curve_quick_grows_units_and_sensors(tiny_models: Path) -> None:
    args = cost_curve.build_parser().parse_args(
        ["--models", str(tiny_models), "--quick", "--tiny", "--no-write"]
    )
    result = cost_curve.run(args)
    rows = result["points"]
    assert [(r["series"], r["units"], r["sensors"]) for r in rows] == [
        ("units", 2, 8), ("units", 20, 8), ("sensors", 4, 8), ("sensors", 4, 16),
    ]  # fmt: skip
    for r in rows:
        assert r["kept_up"], r["why_not"]
        assert r["processed_msgs_per_s"] == pytest.approx(r["offered_msgs_per_s"], rel=0.2)
        assert r["cpu_percent"] and r["rss_mb"]
    assert rows[3]["processed_readings_per_s"] == pytest.approx(
        2 * rows[2]["processed_readings_per_s"], rel=0.2
    )
    assert result["findings"]["rss_kb_per_unit_kept_up"] is not None
    assert "| units | 20 | 8 |" in result["markdown"]


def test_run_all_reads_issue14_targets(tmp_path: Path) -> None:
    files = {
        "end_to_end": {"summary": {"sustained_telemetry_readings_per_s": 90000.0}},
        run_all.STRIDE_RUN: {"summary": {"sustained_telemetry_readings_per_s": 50000.0}},
        "latency": {"targets": [{"figure": "p99 reading->score at a subscriber, burst (ms)",
                                 "value": 25.0}]},
    }  # fmt: skip
    runs = []
    for name, doc in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
        runs.append({"name": name, "result_file": str(tmp_path / f"{name}.json")})
    got = {t["figure"]: t["met"] for t in run_all.issue14_targets(runs)}
    assert got["telemetry readings/s, zero loss"] is True
    stride = next(f for f in got if "stride 10" in f)
    assert got[stride] is False  # its own file, not the stride-1 figure
    assert got["p99 reading->score, burst (subscriber)"] is False
    assert got["per-sensor msgs/s, zero loss"] is None  # not in the file: not measured
    assert got["end to end vs the seed design (x)"] is None


def test_a_missed_target_is_explained_by_the_busiest_profile(tmp_path: Path) -> None:
    quiet = {"samples": 10, "self_percent": [["EpollSelector.select (selectors.py)", 90.0]]}
    busy = {
        "samples": 900,
        "self_percent": [["Session.run (onnxruntime_inference_collection.py)", 41.5],
                         ["Client._sock_send (client.py)", 6.0]],
    }  # fmt: skip
    doc = {"patterns": [{"profile": quiet}, {"profile": busy}, {"profile": None}]}
    (tmp_path / "latency.json").write_text(json.dumps(doc))
    runs = [{"name": "latency", "result_file": str(tmp_path / "latency.json")}]
    [line] = run_all.profile_lines(runs, "latency")
    assert line.startswith("profile (900 samples")
    assert "Session.run (onnxruntime_inference_collection.py) 41.5 %" in line
    assert run_all.profile_lines(runs, "end_to_end") == []
