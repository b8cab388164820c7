"""The SKAB benchmark's protocol code, on small synthetic files in SKAB's format.

Never on the shared SKAB data: these check reading, sensor choice, causality, pooling and
the end-to-end run (real training, ONNX export and onnxruntime scoring, kept tiny).
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

from edge_agent.manifest import load_manifest
from edge_agent.scoring import ModelSet

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


def small_config(**changes: Any) -> Any:
    base = {
        "fit_rows": FIT_ROWS,
        "validation_rows": 40,
        "window": 12,
        "rolling": 6,
        "n_estimators": 30,
        "max_samples": 128,
        "epochs": 2,
        "patience": 1,
        "threads": 1,
    }
    base.update(changes)
    return skab.ProtocolConfig(**base)


@pytest.fixture(scope="module")
def protocol_run(skab_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """One end-to-end run (real training, export and onnxruntime scoring), models kept."""
    models = tmp_path_factory.mktemp("models")
    files = skab.find_skab_files(skab_dir)
    cfg = small_config(normal_segments=1)
    result = skab.run_protocol(files, cfg, progress=lambda _: None, models_dir=models)
    return result, models


def test_reads_skab_files_in_natural_order(skab_dir: Path) -> None:
    files = skab.find_skab_files(skab_dir)
    assert [f.name for f in files] == [
        "anomaly-free/anomaly-free.csv",
        "valve1/2.csv",
        "valve1/10.csv",
    ]
    free, two, _ = files
    assert free.labels is None and not free.has_anomalies
    assert two.values.shape == (ROWS, 8) and two.values.dtype == np.float32
    assert two.has_anomalies and int(two.labels.sum()) == ANOMALY.stop - ANOMALY.start
    x, _ = _experiment(seed=2)
    np.testing.assert_allclose(two.values, x, rtol=1e-5)


def test_refuses_a_csv_that_is_not_skab(tmp_path: Path) -> None:
    bad = tmp_path / "other.csv"
    bad.write_text("timestamp;a;b\n1;2;3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a SKAB file"):
        skab.read_skab_csv(bad)


def test_drifting_sensors_are_left_out_without_labels(skab_dir: Path) -> None:
    files = [f for f in skab.find_skab_files(skab_dir) if f.has_anomalies]
    idx, drift = skab.choose_sensors(files, small_config())
    used = [skab.SENSOR_NAMES[i] for i in idx]
    assert "temperature" not in used and "thermocouple" not in used
    assert "volume_flow_rate_rms" in used and len(used) == 6
    assert drift["temperature"] > 2 > 0.5 > drift["volume_flow_rate_rms"]
    # labels play no part: the same files with labels stripped give the same choice
    unlabelled = [skab.SkabFile(f.path, f.name, f.values, None) for f in files]
    assert skab.choose_sensors(unlabelled, small_config())[0] == idx
    explicit = small_config(sensors=("current", "voltage"))
    assert skab.choose_sensors(files, explicit)[0] == [2, 6]
    with pytest.raises(ValueError, match="unknown sensors"):
        skab.choose_sensors(files, small_config(sensors=("flow",)))


def test_k_of_n_smoothing_only_looks_back() -> None:
    flags = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 1], dtype=bool)
    assert skab.causal_k_of_n(flags, 2, 3).tolist() == [
        False, False, True, True, True, False, False, False, True, True,
    ]  # fmt: skip
    assert skab.causal_k_of_n(flags, 1, 1).tolist() == flags.tolist()
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.random(40) < 0.4
        b = a.copy()
        cut = int(rng.integers(1, 40))
        b[cut:] = ~b[cut:]
        assert (skab.causal_k_of_n(a, 3, 5)[:cut] == skab.causal_k_of_n(b, 3, 5)[:cut]).all()


def test_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="rolling"):
        small_config(rolling=20)
    with pytest.raises(ValueError, match="smoothing"):
        small_config(smooth_k=4, smooth_n=3)
    with pytest.raises(ValueError, match="window"):
        small_config(window=170)


@pytest.mark.slow
def test_a_decision_never_depends_on_later_readings(
    skab_dir: Path, protocol_run: tuple[Any, Path]
) -> None:
    result, models = protocol_run
    model_set = ModelSet.load(models / skab.model_dir_name("valve1/2.csv"))
    used = [skab.SENSOR_NAMES.index(s) for s in result["sensors"]["used"]]
    series = np.ascontiguousarray(skab.read_skab_csv(skab_dir / "valve1" / "2.csv").values[:, used])

    cut = 300
    tampered = series.copy()
    tampered[cut:] = tampered[cut:] * 3.0 + 7.0  # the future is wildly different
    a = skab.score_series(model_set, series)
    b = skab.score_series(model_set, tampered)
    before = cut - (model_set.window - 1)  # scores start at the first full window
    for key in ("iforest", "lstm_ae"):
        np.testing.assert_array_equal(a["scores"][key][:before], b["scores"][key][:before])
        assert not np.array_equal(a["scores"][key][before:], b["scores"][key][before:])
    np.testing.assert_array_equal(a["ensemble"][:before], b["ensemble"][:before])


@pytest.mark.slow
def test_protocol_end_to_end_on_synthetic_files(protocol_run: tuple[Any, Path]) -> None:
    result, models = protocol_run
    json.dumps(result)  # JSON-ready as written to results/skab.json

    assert result["data"]["files"] == ["valve1/2.csv", "valve1/10.csv"]
    assert result["data"]["skipped_without_anomalies"] == ["anomaly-free/anomaly-free.csv"]
    assert result["data"]["test_points"] == 2 * (ROWS - FIT_ROWS)
    assert result["data"]["anomalous_test_points"] == 2 * (ANOMALY.stop - ANOMALY.start)
    assert result["sensors"]["dropped"] == ["temperature", "thermocouple"]
    for name in result["data"]["files"]:  # a verified model set per file, as the agent loads it
        manifest = load_manifest(models / skab.model_dir_name(name))
        assert manifest.sensor_names == result["sensors"]["used"]
        assert manifest.window == small_config().window

    pooled = result["results"]
    assert set(pooled) == {"iforest", "lstm_ae", "ensemble"}
    for m in pooled.values():
        assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == result["data"]["test_points"]
        assert m["events"] == 2
    # a fault this gross is caught by both models, with few false alarms
    for key in ("iforest", "lstm_ae", "ensemble"):
        assert pooled[key]["event_recall"] == 1.0, key
        assert pooled[key]["far_percent"] < 20, (key, pooled[key])
    assert pooled["lstm_ae"]["mar_percent"] < 20, pooled["lstm_ae"]
    assert pooled["ensemble"]["mar_percent"] < 20, pooled["ensemble"]
    # the per-file figures pool to the reported ones
    tp = sum(
        round((1 - f["metrics"]["ensemble"]["mar_percent"] / 100) * f["anomalous_test_points"])
        for f in result["per_file"]
    )
    assert tp == pooled["ensemble"]["tp"]
    assert [t["met"] is not None for t in result["targets"]] == [True, True, True]
    assert len(result["threshold_sensitivity"]) == len(skab.SENSITIVITY)
    # the label-free FAR check ran on the one anomaly-free piece of fit + median test rows
    normal = result["far_on_anomaly_free_segments"]
    assert normal["segments"] == [f"anomaly-free/anomaly-free.csv[0:{ROWS}]"]
    assert normal["test_points"] == ROWS - FIT_ROWS
    assert 0 <= normal["far_percent"]["ensemble"] < 20


def test_normal_segments_cut_consecutive_unlabelled_pieces() -> None:
    x = np.arange(50 * 8, dtype=np.float32).reshape(50, 8)
    free = skab.SkabFile(Path("free.csv"), "free.csv", x, None)
    pieces = skab.normal_segments([free], count=5, test_rows=8, fit_rows=12)
    assert [p.name for p in pieces] == ["free.csv[0:20]", "free.csv[20:40]"]
    assert all(p.labels is not None and not p.labels.any() for p in pieces)
    np.testing.assert_array_equal(pieces[1].values, x[20:40])
    assert len(skab.normal_segments([free], count=1, test_rows=8, fit_rows=12)) == 1
