"""The healthy-recording benchmark: what an operator would see, counted from the replay.

Never on the shared SKAB data: a small synthetic recording in the anomaly-free file's format,
run end to end (real ``edge-train train``, ONNX, ``edge-agent replay``) on tiny settings, and
the episode bookkeeping on hand-built replay steps.
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


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while being created
    spec.loader.exec_module(module)
    return module


healthy = _load("skab_healthy")

ROWS = 480
SHIFT = slice(380, 440)  # after the fit rows of fit "200" and of "half" (240)


def _recording(path: Path) -> None:
    """Pump-like levels and noise; a level shift of both accelerometers and the flow late on."""
    rng = np.random.default_rng(3)
    level = np.array([0.21, 0.27, 2.4, 0.1, 89.0, 28.0, 228.0, 125.0])
    noise = np.array([0.004, 0.003, 0.3, 0.25, 0.05, 0.01, 10.0, 1.0])
    x = level + noise * rng.standard_normal((ROWS, 8))
    x[SHIFT, 0] += 0.06  # 15 noise widths
    x[SHIFT, 1] += 0.045
    x[SHIFT, 7] -= 15.0
    header = (
        "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;"
        "Thermocouple;Voltage;Volume Flow RateRMS"
    )
    lines = [header] + [
        ";".join([f"2020-02-08 13:{i // 60:02d}:{i % 60:02d}", *(f"{v:.6g}" for v in row)])
        for i, row in enumerate(x)
    ]
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("skab")
    _recording(root / healthy.RECORDING)
    out = root / "skab_healthy.json"
    rc = healthy.main(
        [
            "--data", str(root), "--fits", "200,half", "--window", "10", "--jobs", "1",
            "--out", str(out),
            "--train-arg=--epochs=1", "--train-arg=--trees=10", "--train-arg=--folds=3",
        ]
    )  # fmt: skip
    assert rc == 0
    data: dict[str, Any] = json.loads(out.read_text("utf-8"))
    return data


@pytest.mark.slow
def test_judges_the_steps_after_each_fit_with_the_product_commands(
    result: dict[str, Any],
) -> None:
    protocol = result["protocol"]
    cmd = protocol["train_command"]
    assert cmd.startswith("edge-train train ") and "--exclude" not in cmd
    assert "--label-column none" in cmd and "--window 10" in cmd
    assert protocol["replay_command"].startswith("edge-agent replay ")
    fits = {f["fit"]: f for f in result["fits"]}
    assert [fits[k]["fit_rows"] for k in ("200", "half")] == [200, ROWS // 2]
    for f in fits.values():
        assert f["judged_steps"] == ROWS - f["fit_rows"]  # one row a second, no gaps
        assert f["scored_steps"] == f["judged_steps"]  # the window is full by then
        assert set(f["flagged_percent"]) == {"iforest", "lstm_ae", "ensemble"}
        assert sum(f["alarms_raised"].values()) == len(f["episodes"])


def _seconds_into(ts: str) -> float:
    t = healthy.parse_table_timestamp(ts)
    start = healthy.parse_table_timestamp("2020-02-08T13:00:00.000Z")
    assert t is not None and start is not None
    return t - start


@pytest.mark.slow
def test_a_late_level_shift_is_in_alarm_and_the_alerts_name_it(result: dict[str, Any]) -> None:
    """15 noise widths on three sensors: the set trained on the quiet rows alarms through it,
    and names them; no bad-quality alarm."""
    shifted = {"Accelerometer1RMS", "Accelerometer2RMS", "Volume Flow RateRMS"}
    for f in result["fits"]:
        overlapping = [
            e
            for e in f["episodes"]
            if e["alarm"] == "anomaly"
            and _seconds_into(e["raised"]) <= SHIFT.stop
            and _seconds_into(e["raised"]) + e["seconds"] >= SHIFT.start
        ]
        assert overlapping, f["episodes"]
        named = {s for e in overlapping for s in e["named"] + e["outside_envelope"]}
        assert named & shifted, overlapping
        # a shift in level is the process moving, not a noisy transmitter: sensor health
        # leaves the one large change out of the roughness it judges
        assert not [e for e in f["episodes"] if e["kind"] == "bad_quality"], f["episodes"]


def test_refuses_a_folder_without_the_recording(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="anomaly-free"):
        healthy.main(["--data", str(tmp_path), "--out", str(tmp_path / "x.json")])


def test_refuses_a_fit_that_is_neither_rows_nor_half(tmp_path: Path) -> None:
    _recording(tmp_path / healthy.RECORDING)
    with pytest.raises(SystemExit, match="neither"):
        healthy.main(["--data", str(tmp_path), "--fits", "third"])
