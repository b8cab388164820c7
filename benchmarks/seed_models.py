"""The seed design's in-process models (Keras + sklearn), built to a model set's shapes.

The baseline and inference benchmarks compare the agent's ONNX graphs with these; they are
built once per model set and cached next to the model sets (:func:`model_sets.cache_dir`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from model_sets import cache_dir, load_manifest_dict, manifest_digest, series_for


@dataclass
class NativeModels:
    """The seed design's in-process models, matching a model set's configuration."""

    dir: Path
    iforest_pickle: Path
    keras_file: Path
    n_features: int
    window: int
    n_sensors: int
    trained_epochs: int

    def load_iforest(self) -> Any:
        import pickle

        with self.iforest_pickle.open("rb") as f:
            return pickle.load(f)

    def load_keras(self) -> Any:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        import training.lstm_ae  # noqa: F401  (registers the custom layers)

        return keras.models.load_model(self.keras_file, compile=False)


def native_models(
    models: Path, *, epochs: int = 1, trees: int | None = None, keras: bool = True
) -> NativeModels:
    """Keras + sklearn models of the same shapes and sizes as ``models`` (cached).

    The Isolation Forest is fitted with the manifest's ``n_estimators``/``max_samples`` on
    simulated features; the LSTM autoencoder has the project's architecture for the
    manifest's window and sensors and the manifest's scaler, trained ``epochs`` epochs on
    simulated windows (0 = untrained weights: the cost of inference does not depend on them).
    ``keras=False`` builds only the forest (no TensorFlow import).
    """
    man = load_manifest_dict(models)
    params = man["models"]["iforest"].get("params", {})
    n_trees = trees or int(params.get("n_estimators", 200))
    max_samples = params.get("max_samples", 256)
    out = cache_dir() / f"native-{manifest_digest(models)}-t{n_trees}"
    window = int(man["window"])
    sensors = [s["name"] for s in man["sensors"]]
    result = NativeModels(
        out,
        out / "iforest.pkl",
        out / f"lstm_ae-e{epochs}.keras",
        len(man["features"]["names"]),
        window,
        len(sensors),
        epochs,
    )
    out.mkdir(parents=True, exist_ok=True)
    series = None
    if not result.iforest_pickle.is_file():
        import pickle

        from edge_agent.pipeline.features import FeatureSpec, compute_series_features
        from training.iforest import fit_iforest

        print(f"fitting a native Isolation Forest in {out} (once; cached) …", flush=True)
        spec = FeatureSpec.from_dict(man["features"])
        series = series_for(sensors, 6000)
        pipe = fit_iforest(
            compute_series_features(series, spec),
            n_estimators=n_trees,
            max_samples=max_samples,
            seed=0,
        )
        tmp = result.iforest_pickle.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(pipe, f)
        tmp.replace(result.iforest_pickle)
    if keras and not result.keras_file.is_file():
        print(f"building a native Keras LSTM autoencoder in {out} (once; cached) …", flush=True)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from edge_agent.pipeline.windows import sliding_windows
        from training import lstm_ae

        if series is None:
            series = series_for(sensors, 6000)
        sc = man.get("scalers", {}).get("lstm_ae")
        if sc:
            center = np.asarray(sc["center"], np.float32)
            scale = np.asarray(sc["scale"], np.float32)
        else:
            center, scale = lstm_ae.fit_scaler(series)
        if epochs > 0:
            wins = sliding_windows(series, window)
            model, _ = lstm_ae.fit_lstm_ae(
                wins[:4000:4],
                wins[4000::8],
                center,
                scale,
                epochs=epochs,
                batch_size=128,
                patience=epochs,
                max_train_windows=1000,
                progress=lambda s: None,
            )
        else:
            model = lstm_ae.build_scoring_model(
                lstm_ae.build_autoencoder(window, len(sensors)), center, scale
            )
        tmp_file = result.keras_file.with_name("tmp-" + result.keras_file.name)
        model.save(tmp_file)
        tmp_file.replace(result.keras_file)
    return result
