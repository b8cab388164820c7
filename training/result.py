"""What one training run produced (``train``'s return value; the report and tracking read it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.manifest import (
    Manifest,
)

from .data import Dataset, Split
from .evaluation import ScoredSteps


@dataclass
class TrainResult:
    """What ``train`` produced; the native models are kept for parity checks and reports."""

    out_dir: Path
    manifest: Manifest
    data: Dataset
    split: Split
    iforest: Any  # sklearn Pipeline (RobustScaler + IsolationForest)
    lstm_scoring_model: Any  # keras Model: raw window -> window_error, sensor_error
    history: dict[str, list[float]]
    #: Out-of-sample scores of the fit part (what the thresholds were placed on).
    calibration: ScoredSteps
    #: The evaluated steps (test part or evaluation file); None without either.
    test: ScoredSteps | None
    metrics: dict[str, Any]
    #: The dataset ``test.steps`` index (``data`` itself, or the evaluation file).
    test_data: Dataset | None = None
    #: Window-end steps of each calibration fold (k-fold) or of the hold-out (one).
    calibration_folds: list[NDArray[np.int64]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None
    plan_mode: str = "kfold"
