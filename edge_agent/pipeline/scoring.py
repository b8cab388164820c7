"""Scoring with onnxruntime: a verified model set, loaded once, scored in batches.

Both models score the same thing: a window of ``manifest.window`` steps ending at the
step being judged. The Isolation Forest gets the window's features (computed here with
the shared feature code), the LSTM autoencoder the raw window; scaling is inside both
graphs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edge_agent.pipeline.ensemble import Votes, vote
from edge_agent.pipeline.features import compute_features
from edge_agent.pipeline.manifest import Manifest, ManifestError, ModelEntry, load_manifest


@dataclass
class BatchScores:
    """Scores of one batch of windows; ``scores`` are sign-corrected (higher = anomalous)."""

    scores: dict[str, NDArray[np.float64]]
    per_sensor: NDArray[np.float32] | None
    votes: Votes
    seconds: dict[str, float] = field(default_factory=dict)


def session_options(threads: int = 1, mem_arena: bool = True) -> ort.SessionOptions:
    """Small-box defaults: few threads; the CPU arena bounded by the part size (see
    :data:`~edge_agent.pipeline.outcome.MAX_SCORE_BATCH`)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = mem_arena
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def _check_io(key: str, entry: ModelEntry, sess: ort.InferenceSession, manifest: Manifest) -> None:
    inputs = {i.name: i for i in sess.get_inputs()}
    if entry.input_name not in inputs:
        raise ManifestError(
            f"model {key}: input {entry.input_name!r} not in graph (has {sorted(inputs)})"
        )
    shape = inputs[entry.input_name].shape
    if entry.input_kind == "window":
        expected: list[Any] = [manifest.window, len(manifest.sensors)]
    else:
        expected = [manifest.feature_spec.n_features]
    fixed = [d for d in shape[1:]]
    if len(fixed) != len(expected) or any(
        isinstance(d, int) and d != e for d, e in zip(fixed, expected, strict=False)
    ):
        raise ManifestError(
            f"model {key}: input shape {shape} does not fit (batch, {expected}) from the manifest"
        )
    outputs = {o.name for o in sess.get_outputs()}
    wanted = {entry.score_output}
    if entry.per_sensor_output:
        wanted.add(entry.per_sensor_output)
    missing = wanted - outputs
    if missing:
        raise ManifestError(f"model {key}: outputs {sorted(missing)} not in graph")


class ModelSet:
    """A verified manifest with one onnxruntime session per model."""

    def __init__(
        self,
        manifest: Manifest,
        models_dir: Path,
        sessions: dict[str, Any],
        parallel: int = 1,
    ) -> None:
        self.manifest = manifest
        self.models_dir = models_dir
        self.sessions = sessions
        #: Threads a large batch's parts may be scored on at once (``models.batch_threads``;
        #: see :func:`~edge_agent.pipeline.outcome.batch_slices`). onnxruntime sessions may
        #: be run from several threads at once, so the parts share these sessions.
        self.parallel = max(1, parallel)
        self.feature_spec = manifest.feature_spec

    @classmethod
    def load(
        cls,
        models_dir: Path | str,
        expected_sensors: list[str] | None = None,
        threads: int = 1,
        mem_arena: bool = True,
        batch_threads: int = 1,
    ) -> ModelSet:
        models_dir = Path(models_dir)
        manifest = load_manifest(models_dir, expected_sensors)
        opts = session_options(threads, mem_arena)
        sessions: dict[str, Any] = {}
        for key, entry in manifest.models.items():
            try:
                sess = ort.InferenceSession(
                    str(models_dir / entry.file),
                    sess_options=opts,
                    providers=["CPUExecutionProvider"],
                )
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ManifestError(f"model {key}: onnxruntime cannot load it: {exc}") from None
            _check_io(key, entry, sess, manifest)
            sessions[key] = sess
        return cls(manifest, models_dir, sessions, parallel=batch_threads)

    @property
    def version(self) -> str:
        return self.manifest.model_set_version

    @property
    def window(self) -> int:
        return self.manifest.window

    def raw_outputs(self, key: str, windows: NDArray[np.float32]) -> dict[str, NDArray[Any]]:
        entry = self.manifest.models[key]
        if entry.input_kind == "features":
            x = compute_features(windows, self.feature_spec)
        else:
            x = np.ascontiguousarray(windows, dtype=np.float32)
        names = [entry.score_output]
        if entry.per_sensor_output:
            names.append(entry.per_sensor_output)
        values = self.sessions[key].run(names, {entry.input_name: x})
        return dict(zip(names, values, strict=True))

    def score(self, windows: NDArray[np.floating[Any]]) -> BatchScores:
        """Score a (batch, window, sensors) array of raw readings."""
        w = np.ascontiguousarray(windows, dtype=np.float32)
        if w.ndim == 2:
            w = w[None]
        scores: dict[str, NDArray[np.float64]] = {}
        seconds: dict[str, float] = {}
        per_sensor: NDArray[np.float32] | None = None
        for key, entry in self.manifest.models.items():
            t0 = time.perf_counter()
            out = self.raw_outputs(key, w)
            seconds[key] = time.perf_counter() - t0
            raw = np.asarray(out[entry.score_output], dtype=np.float64).reshape(len(w))
            scores[key] = entry.score_sign * raw
            if entry.per_sensor_output:
                per_sensor = np.asarray(out[entry.per_sensor_output], dtype=np.float32).reshape(
                    len(w), -1
                )
        votes = vote(scores, self.manifest.models, self.manifest.voting)
        return BatchScores(scores, per_sensor, votes, seconds)
