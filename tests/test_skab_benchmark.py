"""The SKAB benchmark on small synthetic files in SKAB's format.

Never on the shared SKAB data. The benchmark must run the product's own commands (the
``edge-train train`` and ``edge-agent replay`` entry points) per file and pool what the agent
decided: these tests run it end to end (real training, ONNX, replay) on tiny settings.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_skab() -> ModuleType:
    spec = importlib.util.spec_from_file_location("skab_benchmark", REPO / "benchmarks" / "skab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while being created
    spec.loader.exec_module(module)
    return module


skab = _load_skab()

HEADER = (
    "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;"
    "Voltage;Volume Flow RateRMS;anomaly;changepoint"
)
FIT_ROWS = 200
ROWS = 420
ANOMALY = slice(280, 380)


def _readings(rows: int, seed: int) -> np.ndarray:
    """SKAB-like levels and noise; temperature and thermocouple warm up steadily."""
    rng = np.random.default_rng(seed)
    level = np.array([0.027, 0.040, 1.0, 0.08, 70.0, 25.0, 230.0, 32.0])
    noise = np.array([0.0004, 0.0009, 0.27, 0.25, 0.05, 0.01, 10.0, 0.4])
    x = level + noise * rng.standard_normal((rows, 8))
    t = np.arange(rows)
    x[:, 4] += 0.01 * t  # +2 degC over the fit rows: 40x its noise
    x[:, 5] += 0.002 * t
    return x


def _write(path: Path, x: np.ndarray, labels: np.ndarray | None) -> None:
    header = HEADER if labels is not None else HEADER.rsplit(";", 2)[0]
    lines = [header]
    for i, row in enumerate(x):
        cells = [f"2020-03-09 10:{i // 60 % 60:02d}:{i % 60:02d}", *(f"{v:.6g}" for v in row)]
        if labels is not None:
            cells += [f"{float(labels[i]):.1f}", "0.0"]
        lines.append(";".join(cells))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _experiment(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A valve closing, exaggerated: flow and pressure drop, both accelerometers rise."""
    x = _readings(ROWS, seed)
    y = np.zeros(ROWS, dtype=np.int8)
    y[ANOMALY] = 1
    x[ANOMALY, 7] -= 8.0  # 20 noise widths
    x[ANOMALY, 3] -= 2.5  # 10
    x[ANOMALY, 0] += 0.006  # 15
    x[ANOMALY, 1] += 0.012  # 13
    return x, y


def _step(ts: str, alerts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ts": ts, "alerts": alerts}


def _alert(alarm: str, state: str) -> dict[str, Any]:
    return {
        "alarm": alarm,
        "kind": alarm.split("/")[0],
        "state": state,
        "message": f"{alarm} {state}",
        "top_sensors": [{"sensor": "Pressure", "error": 2.0}],
        "outside_envelope": [],
    }


def test_episodes_count_what_is_raised_after_the_fit_and_how_long_it_stays() -> None:
    t = "2020-02-08T13:00:{:02d}.000Z"
    steps = [
        _step(t.format(0), [_alert("anomaly", "raised")]),  # during the fit rows: not judged
        _step(t.format(5), [_alert("anomaly", "cleared")]),
        _step(t.format(10), [_alert("anomaly", "raised")]),
        _step(t.format(12), [_alert("bad_quality/Pressure", "raised")]),
        _step(t.format(40), [_alert("anomaly", "cleared")]),
        _step(t.format(50), []),
    ]
    judged_from = skab.parse_table_timestamp(t.format(8))
    eps = skab.alarm_episodes(steps, judged_from)
    assert [(e["alarm"], e["seconds"], e["cleared"]) for e in eps] == [
        ("anomaly", 30.0, t.format(40)),
        ("bad_quality/Pressure", 38.0, None),  # still raised when the recording ends
    ]
    assert eps[0]["named"] == ["Pressure"] and eps[1]["kind"] == "bad_quality"


@pytest.fixture(scope="module")
def skab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("skab")
    for i in (10, 2):  # natural order must put 2 before 10
        x, y = _experiment(seed=i)
        _write(root / "valve1" / f"{i}.csv", x, y)
    _write(root / "anomaly-free" / "anomaly-free.csv", _readings(ROWS, seed=99), None)
    return root


def _run(skab_dir: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "skab.json"
    rc = skab.main(
        [
            "--data", str(skab_dir), "--subsets", "valve1", "--fit-rows", str(FIT_ROWS),
            "--window", "10", "--jobs", "1", "--out", str(out),
            "--train-arg=--epochs=1", "--train-arg=--trees=10", "--train-arg=--folds=3",
        ]
    )  # fmt: skip
    assert rc == 0
    result: dict[str, Any] = json.loads(out.read_text("utf-8"))
    return result


@pytest.fixture(scope="module")
def result(skab_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(skab_dir, tmp_path_factory.mktemp("skab-out"))


@pytest.mark.slow
def test_runs_the_product_commands_on_every_file_in_natural_order(result: dict[str, Any]) -> None:
    protocol = result["protocol"]
    assert protocol["files"] == ["valve1/2.csv", "valve1/10.csv"]
    cmd = protocol["train_command"]
    assert cmd.startswith("edge-train train ") and "--label-column none" in cmd
    assert "--exclude changepoint" in cmd and "--window 10" in cmd
    assert protocol["replay_command"].startswith("edge-agent replay ")
    # one command line for every file: nothing in it names a file's own labels or rows
    assert "anomaly" not in cmd.split("--sensors")[1].split()[0]


@pytest.mark.slow
def test_pools_the_judged_rows_after_the_fit_rows(result: dict[str, Any]) -> None:
    judged = 2 * (ROWS - FIT_ROWS)
    pooled = result["pooled"]
    assert pooled["rows"] == judged
    for detector in ("iforest", "lstm_ae", "ensemble"):
        m = pooled["point"][detector]
        assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == judged
        assert m["anomalous_points"] == 2 * (ANOMALY.stop - ANOMALY.start)
    assert set(pooled["alarm"]) == {"ensemble"}
    assert [f["rows"] for f in result["per_file"]] == [ROWS - FIT_ROWS] * 2
    assert set(result["targets_met"]) == {"f1", "far_percent", "mar_percent"}
    normal = pooled["alarms_on_normal_rows"]
    listed = [ep for f in result["per_file"] for ep in f["alarms_on_normal_rows"]]
    assert sum(normal["raised"].values()) == len(listed)
    assert normal["normal_hours"] == pytest.approx(
        (judged - 2 * (ANOMALY.stop - ANOMALY.start)) / 3600
    )


@pytest.mark.slow
def test_the_exaggerated_valve_fault_is_found_and_normal_rows_mostly_pass(
    result: dict[str, Any],
) -> None:
    """20-noise-width level changes: a model set trained on 200 rows sees them."""
    ens = result["pooled"]["point"]["ensemble"]
    assert ens["recall"] is not None and ens["recall"] > 0.5
    assert ens["far_percent"] < 30.0
    assert result["unscored_rows"] == 0


def test_refuses_a_folder_without_csv_files(tmp_path: Path) -> None:
    (tmp_path / "valve1").mkdir()
    with pytest.raises(SystemExit, match="no CSV files"):
        skab.main(["--data", str(tmp_path), "--out", str(tmp_path / "x.json")])


def test_alarms_are_marked_by_the_label_of_the_row_they_were_raised_on() -> None:
    t = "2020-02-08T13:00:{:02d}.000Z"
    ts = [skab.parse_table_timestamp(t.format(i)) for i in range(20)]
    labels = np.zeros(20, dtype=np.int8)
    labels[10:15] = 1
    steps = [
        _step(t.format(3), [_alert("bad_quality/Pressure", "raised")]),  # fit rows
        _step(t.format(6), [_alert("bad_quality/Pressure", "cleared")]),
        _step(t.format(7), [_alert("sensor_stale/Current", "raised")]),
        _step(t.format(11), [_alert("anomaly", "raised")]),  # on the anomaly
        _step(t.format(17), [_alert("anomaly", "cleared")]),
    ]
    eps = skab.labelled_episodes(steps, ts, labels, fit_rows=5)
    assert [(e["alarm"], e["on_normal"], e["phase"]) for e in eps] == [
        ("sensor_stale/Current", True, "before"),
        ("anomaly", False, None),
    ]
    results = [{"labels": labels[5:].tolist(), "episodes": eps}] * 2
    normal = skab.on_normal_rows(results)
    assert normal["raised"] == {"sensor_stale": 2}
    assert normal["raised_relative_to_the_fault"] == {"before": 2}
    after = skab.labelled_episodes(
        [_step(t.format(16), [_alert("anomaly", "raised")])], ts, labels, fit_rows=5
    )
    assert (after[0]["on_normal"], after[0]["phase"]) == (True, "after")
    assert normal["normal_hours"] == 2 * 10 / 3600
    assert normal["per_hour"]["sensor_stale"] == 2 / normal["normal_hours"]
