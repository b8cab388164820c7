"""Stage 3 of :func:`training.pipeline.train`: the fitted models as ONNX files, and the
manifest document that describes them (sensors, features, scalers, models, voting).

The thresholds are placed afterwards (:mod:`training.calibration`) and the manifest is
validated and written by :func:`training.model_set.write_manifest`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.pipeline.manifest import FORMAT_VERSION, ModelEntry, VotingEntry

from .config import TrainConfig
from .data import Dataset, Split
from .model_set import MODEL_FILES, SCALER_NOTE, entry, package_versions, sensor_entries
from .out_of_sample import Fitted


def export_models(
    cfg: TrainConfig, fitted: Fitted, n_sensors: int, directory: Path
) -> dict[str, ModelEntry]:
    """Both ONNX files into ``directory``; their manifest entries (thresholds still unset)."""
    from . import iforest as iforest_mod
    from . import lstm_ae as lstm_mod

    if_path = directory / MODEL_FILES["iforest"]
    lstm_path = directory / MODEL_FILES["lstm_ae"]
    final = fitted.final
    if_info = iforest_mod.export_iforest(final.forest, fitted.spec.n_features, if_path)
    lstm_info = lstm_mod.export_lstm_ae(final.scoring_model, cfg.window, n_sensors, lstm_path)
    history = final.history
    best = int(np.argmin(history["val_loss"]))
    return {
        "iforest": entry(
            "iforest",
            if_info,
            "features",
            if_path,
            {
                "n_estimators": cfg.iforest.n_estimators,
                "max_samples": cfg.iforest.max_samples,
                "contamination": cfg.iforest.contamination,
                "seed": cfg.seed,
                "training_rows": final.iforest_rows,
                "onnx_nodes": if_info.get("nodes"),
            },
        ),
        "lstm_ae": entry(
            "lstm_ae",
            lstm_info,
            "window",
            lstm_path,
            {
                "epochs_max": cfg.lstm_ae.epochs,
                "epochs_run": len(history["loss"]),
                "best_epoch": best + 1,
                "best_val_loss": history["val_loss"][best],
                "batch_size": cfg.lstm_ae.batch_size,
                "patience": cfg.lstm_ae.patience,
                "max_train_windows": cfg.lstm_ae.max_train_windows,
                "training_windows": final.lstm_windows,
                "seed": cfg.seed,
            },
        ),
    }


def manifest_dict(
    cfg: TrainConfig,
    data: Dataset,
    split: Split,
    fitted: Fitted,
    entries: dict[str, ModelEntry],
    voting: VotingEntry,
    created: datetime,
) -> dict[str, Any]:
    """The manifest as a dict: version ``pending`` and no metrics yet (the pipeline adds them
    after evaluating the exported files)."""
    from .iforest import scaler_params

    return {
        "format_version": FORMAT_VERSION,
        "model_set_version": "pending",
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "training_data_sha256": data.sha256,
        "sensors": [
            s.to_dict()
            for s in sensor_entries(
                data,
                split.fit,
                cfg.data.instrument_ranges,
                cfg.rolling,
                cfg.calibration.alarms_per_day,
                slice(int(fitted.plan.scored[0]) - cfg.window + 1, int(fitted.plan.scored[-1]) + 1),
            )
        ],
        "window": cfg.window,
        "step_seconds": data.step_seconds,
        "features": fitted.spec.to_dict(),
        "scalers": {
            "note": SCALER_NOTE,
            "iforest": {"kind": "robust", **scaler_params(fitted.final.forest)},
            "lstm_ae": {
                "kind": "standard",
                "center": [float(v) for v in fitted.lstm_center],
                "scale": [float(v) for v in fitted.lstm_scale],
            },
        },
        "models": {k: e.model_dump(mode="json") for k, e in entries.items()},
        "voting": voting.model_dump(mode="json"),
        "versions": package_versions(),
    }
