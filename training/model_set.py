"""Writing a model set: per-sensor manifest entries, model entries, versions, the manifest.

:func:`write_manifest` validates through the agent's own :class:`Manifest` before writing."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import edge_agent
from edge_agent.config import AlarmSettings
from edge_agent.pipeline.manifest import (
    MANIFEST_NAME,
    Manifest,
    ModelEntry,
    sha256_file,
)
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, SensorSpec

from . import calibration
from .data import Dataset

MODEL_KEYS = ("iforest", "lstm_ae")
MODEL_FILES = {"iforest": "iforest.onnx", "lstm_ae": "lstm_ae.onnx"}
SCALER_NOTE = (
    "Both scalers are also inside the ONNX graphs (the agent feeds raw readings); these "
    "copies are for inspection only. Do not scale inputs a second time."
)


HEALTH_ALARMS_PER_DAY = 0.1
#: A sensor that held one exact value longer than this in the fit data is a held signal (a
#: valve position at base load, a setpoint): a steady process and a stuck transmitter look
#: alike on it, and twice its longest hold is only the longest steady spell training happened
#: to see (measured: a valve held 91 min in a day of fit data, 4.3 h the next day), so it gets
#: no frozen check. Analog transmitters repeat an exact value for seconds, not an hour.
HELD_SIGNAL_SECONDS = 3600.0


def sensor_entries(
    data: Dataset,
    fit: slice,
    configured: dict[str, Any],
    rolling: int = 10,
    alarms_per_day: float | None = None,
    health: slice | None = None,
) -> list[SensorSpec]:
    """Instrument range (a known sensor's spec, or ``data.instrument_ranges``; else none),
    training envelope (the fit part's range) and health limits per sensor.

    Nothing derived from the data ever rejects a reading: the envelope only tells the
    alert which sensor left what training saw; the health limits (frozen run, roughness,
    see :mod:`edge_agent.pipeline.sensor_health`) raise a bad-quality alarm, placed like the
    ensemble's alarm threshold so that a healthy sensor stays quiet, on the ``health``
    steps (the calibration's out-of-sample stretch: for a hold-out, the tail the models never
    saw; a file of several units one after another has jumps between them elsewhere).
    """
    from edge_agent.pipeline.sensor_health import (
        ROUGHNESS_TRIM,
        longest_runs,
        roughness_floor,
        roughness_series,
    )

    known = {s.name: s for s in THERMAL_UNIT_SENSORS}
    values = data.values[fit][data.real(fit)]
    # each stretch between long gaps on its own: a run or a change never spans an outage
    parts = [data.values[s] for s in data.segments(fit if health is None else health)]
    checked = np.concatenate(parts)
    runs = np.max([longest_runs(p) for p in parts], axis=0)
    trim = min(ROUGHNESS_TRIM, rolling - 2)  # a window of 2 steps has one change
    rough = np.concatenate([roughness_series(p, rolling, trim) for p in parts])
    floor = roughness_floor(parts, rolling, trim)
    days = len(checked) * data.step_seconds / 86400
    on_delay = AlarmSettings().on_delay
    specs = []
    for j, name in enumerate(data.sensors):
        base = known.get(name, SensorSpec(name, ""))
        rng = configured.get(name)
        if rng is not None:
            base = replace(
                base,
                lo=base.lo if rng.lo is None else rng.lo,
                hi=base.hi if rng.hi is None else rng.hi,
            )
        r = rough[:, j]
        eps = 1e-9 + 1e-6 * float(np.std(checked[:, j]))
        log_r = np.log(r + eps)
        limit, _ = calibration.alarm_threshold(
            log_r,
            float(np.quantile(log_r, 0.995)),
            on_delay,
            days,
            alarms_per_day or HEALTH_ALARMS_PER_DAY,
        )
        # a sensor that never moved in these steps has no roughness to place a limit on
        rough_hi = max(float(np.exp(limit) - eps), float(floor[j])) if floor[j] > 0 else None
        specs.append(
            replace(
                base,
                envelope_lo=float(values[:, j].min()),
                envelope_hi=float(values[:, j].max()),
                frozen_limit_steps=None
                if runs[j] * data.step_seconds > HELD_SIGNAL_SECONDS
                else int(max(2 * runs[j], 2 * rolling)),
                roughness_hi=rough_hi,
                roughness_trim=trim,
            )
        )
    return specs


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "edge-agent": edge_agent.__version__}
    for dist in ("numpy", "scikit-learn", "keras", "tf2onnx", "skl2onnx", "onnx", "onnxruntime"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            versions["tensorflow"] = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            versions["tensorflow"] = "not installed"
    return versions


def model_set_version(manifest_dict: dict[str, Any], created_at: datetime) -> str:
    """``YYYYMMDD-<8 hex>``: the hash covers what the agent runs (files, thresholds,
    voting, sensors, features), not timestamps or metrics, so equal sets get equal ids."""
    keep = {
        k: v
        for k, v in manifest_dict.items()
        if k not in ("model_set_version", "created_at", "metrics", "versions", "tracking")
    }
    digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()
    return f"{created_at:%Y%m%d}-{digest[:8]}"


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    path = directory / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", "utf-8")
    os.replace(tmp, path)
    return path


# --- training --------------------------------------------------------------------------------


def entry(
    key: str, info: dict[str, Any], input_kind: str, file: Path, params: dict[str, Any]
) -> ModelEntry:
    return ModelEntry(
        kind=key,  # type: ignore[arg-type]  # keys are the model kinds
        file=file.name,
        sha256=sha256_file(file),
        input_name=info["input_name"],
        input_kind=input_kind,  # type: ignore[arg-type]
        input_shape=list(info["input_shape"]),
        score_output=info["score_output"],
        score_sign=info["score_sign"],
        per_sensor_output=info.get("per_sensor_output"),
        threshold=0.0,  # set from validation scores once the ONNX models can be scored
        score_scale=1.0,
        params=params,
    )
