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
