"""Inference cost per window: the agent's ONNX graphs vs the libraries they replace.

Isolation Forest (on the same feature rows): our path-length graph (the shipped file, and
the same graph converted from the native forest), skl2onnx's stock converter on that
native forest, and sklearn's ``decision_function``. LSTM autoencoder (on the same raw
windows): the shipped ONNX graph vs Keras ``predict`` and Keras ``__call__`` on a model of
the same architecture. Batches of 1, 16 and 256 windows. onnxruntime runs as the agent
runs it: one intra-op thread, CPU memory arena off.

    python benchmarks/inference.py [--models DIR] [--seconds 1.0] [--quick] [--no-keras]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_sets
import results
import seed_models
import timing

BATCHES = (1, 16, 256)


def _ort_session(path_or_bytes: Path | bytes) -> Any:
    import onnxruntime as ort

    from edge_agent.pipeline.scoring import session_options

    source = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(
        source, sess_options=session_options(1, False), providers=["CPUExecutionProvider"]
    )


def _skl2onnx_default(pipe: Any, n_features: int) -> bytes:
    """skl2onnx's own IsolationForest converter (what a project gets without ours)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    model = to_onnx(
        pipe,
        initial_types=[("X", FloatTensorType([None, n_features]))],
        target_opset={"": 18, "ai.onnx.ml": 3},
    )
    data: bytes = model.SerializeToString()
    return data


def _row(name: str, batch: int, t: timing.Timing) -> dict[str, Any]:
    return {
        "case": name,
        "batch": batch,
        "per_call": t.to_dict(),
        "per_window_ms": t.cpu_median_ms / batch,
        "per_window_wall_ms": t.median_ms / batch,
        "p99_per_call_ms": t.p99_ms,
    }


ROUNDS = 3


def best_of_rounds(
    cases: list[tuple[str, int, Callable[[], Any]]], seconds: float, rounds: int = ROUNDS
) -> list[dict[str, Any]]:
    """Time every case in ``rounds`` interleaved rounds and keep each case's best round.

    Other processes steal the CPU now and then; a round they hit has a higher median. The
    best of interleaved rounds is the usual defence of a microbenchmark on a shared machine.
    """
    best: dict[int, timing.Timing] = {}
    for _ in range(rounds):
        for i, (_name, _batch, fn) in enumerate(cases):
            t = timing.time_calls(fn, seconds=seconds / rounds, warmup=2)
            if i not in best or t.cpu_median_ms < best[i].cpu_median_ms:
                best[i] = t
    return [_row(name, batch, best[i]) for i, (name, batch, _fn) in enumerate(cases)]


def _default_graph(
    native: seed_models.NativeModels, pipe: Any, n_features: int
) -> tuple[bytes, float]:
    """skl2onnx's stock graph of the native forest, cached (converting 200 trees takes minutes)."""
    path = native.dir / "iforest-skl2onnx-default.onnx"
    meta = native.dir / "iforest-skl2onnx-default.json"
    if path.is_file() and meta.is_file():
        return path.read_bytes(), float(json.loads(meta.read_text())["convert_seconds"])
    print("converting the native forest with skl2onnx's stock converter (once; cached) …")
    t0 = time.perf_counter()
    data = _skl2onnx_default(pipe, n_features)
    seconds = time.perf_counter() - t0
    path.write_bytes(data)
    meta.write_text(json.dumps({"convert_seconds": seconds}))
    return data, seconds


def bench_iforest(
    models: Path, native: seed_models.NativeModels, seconds: float, batches: tuple[int, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import onnx

    from edge_agent.pipeline.features import FeatureSpec, compute_features
    from training.iforest import iforest_to_onnx

    man = model_sets.load_manifest_dict(models)
    spec = FeatureSpec.from_dict(man["features"])
    entry = man["models"]["iforest"]
    windows = model_sets.sample_windows(models, max(batches))
    feats = compute_features(windows, spec)
    pipe = native.load_iforest()
    t0 = time.perf_counter()
    ours_native = iforest_to_onnx(pipe, spec.n_features).SerializeToString()
    ours_convert_s = time.perf_counter() - t0
    default_bytes, default_convert_s = _default_graph(native, pipe, spec.n_features)
    info = {
        "shipped_nodes": len(onnx.load(str(models / entry["file"])).graph.node),
        "shipped_file_bytes": (models / entry["file"]).stat().st_size,
        "ours_nodes": len(onnx.load_from_string(ours_native).graph.node),
        "ours_bytes": len(ours_native),
        "ours_convert_seconds": ours_convert_s,
        "skl2onnx_default_nodes": len(onnx.load_from_string(default_bytes).graph.node),
        "skl2onnx_default_bytes": len(default_bytes),
        "skl2onnx_default_convert_seconds": default_convert_s,
        "native_trees": len(pipe[-1].estimators_),
    }
    t0 = time.perf_counter()
    sessions = {
        "onnx ours (shipped file)": (
            _ort_session(models / entry["file"]),
            entry["input_name"],
            entry["score_output"],
        ),
        "onnx ours (native forest)": (_ort_session(ours_native), "X", "scores"),
    }
    info["ours_session_load_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sessions["onnx skl2onnx default"] = (_ort_session(default_bytes), "X", "scores")
    info["skl2onnx_default_session_load_seconds"] = time.perf_counter() - t0
    cases: list[tuple[str, int, Callable[[], Any]]] = []
    for batch in batches:
        x = np.ascontiguousarray(feats[:batch])
        w = np.ascontiguousarray(windows[:batch])
        for name, (sess, inp, out) in sessions.items():
            cases.append((name, batch, lambda s=sess, i=inp, o=out, x=x: s.run([o], {i: x})))
        cases.append(("sklearn decision_function", batch, lambda x=x: pipe.decision_function(x)))
        cases.append(("features (compute_features)", batch, lambda w=w: compute_features(w, spec)))
    return best_of_rounds(cases, seconds), info


def bench_lstm(
    models: Path, native: seed_models.NativeModels | None, seconds: float, batches: tuple[int, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    man = model_sets.load_manifest_dict(models)
    entry = man["models"]["lstm_ae"]
    windows = model_sets.sample_windows(models, max(batches))
    sess = _ort_session(models / entry["file"])
    info: dict[str, Any] = {"onnx_file_bytes": (models / entry["file"]).stat().st_size}
    names = [entry["score_output"]]
    inputs = {b: np.ascontiguousarray(windows[:b]) for b in batches}
    cases: list[tuple[str, int, Callable[[], Any]]] = [
        (
            "onnx (shipped file)",
            batch,
            lambda x=inputs[batch]: sess.run(names, {entry["input_name"]: x}),
        )
        for batch in batches
    ]
    rows = best_of_rounds(cases, seconds)
    if native is None:
        return rows, info
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    import tensorflow as tf

    model = native.load_keras()
    info["keras_load_seconds"] = time.perf_counter() - t0
    info["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
    info["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    info["keras_trained_epochs"] = native.trained_epochs
    for batch in batches:
        x = np.ascontiguousarray(windows[:batch])
        # seconds per call: a few calls each, no rounds
        rows.append(
            _row(
                "keras predict",
                batch,
                timing.time_calls(
                    lambda x=x: model.predict(x, verbose=0), seconds=seconds, min_calls=5, warmup=2
                ),
            )
        )
        rows.append(
            _row(
                "keras __call__",
                batch,
                timing.time_calls(
                    lambda x=x: model(x, training=False), seconds=0, min_calls=3, warmup=1
                ),
            )
        )
    order = {
        name: i for i, name in enumerate(["onnx (shipped file)", "keras predict", "keras __call__"])
    }
    rows.sort(key=lambda r: (r["batch"], order[r["case"]]))
    return rows, info


def bench_model_set(models: Path, seconds: float, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    """The agent's whole scoring call: features + both graphs + vote."""
    from edge_agent.pipeline.scoring import ModelSet

    ms = ModelSet.load(models, threads=1, mem_arena=False)
    windows = model_sets.sample_windows(models, max(batches))
    inputs = {b: np.ascontiguousarray(windows[:b]) for b in batches}
    cases: list[tuple[str, int, Callable[[], Any]]] = [
        ("ModelSet.score (both models + vote)", batch, lambda w=inputs[batch]: ms.score(w))
        for batch in batches
    ]
    return best_of_rounds(cases, seconds)


def _find(
    rows: list[dict[str, Any]], case: str, batch: int, key: str = "per_window_ms"
) -> float | None:
    for r in rows:
        if r["case"] == case and r["batch"] == batch:
            return float(r[key])
    return None


def summarise(
    if_rows: list[dict[str, Any]], lstm_rows: list[dict[str, Any]], batches: tuple[int, ...]
) -> tuple[dict[str, Any], list[results.Target]]:
    big = max(batches)
    ours1 = _find(if_rows, "onnx ours (shipped file)", 1)
    lstm1 = _find(lstm_rows, "onnx (shipped file)", 1)
    lstm_b = _find(lstm_rows, "onnx (shipped file)", big)
    kp1 = _find(lstm_rows, "keras predict", 1)
    kc1 = _find(lstm_rows, "keras __call__", 1)
    ratios: dict[str, Any] = {}
    for b in batches:
        ours = _find(if_rows, "onnx ours (native forest)", b)
        for other in ("onnx skl2onnx default", "sklearn decision_function"):
            o = _find(if_rows, other, b)
            if ours and o:
                ratios[f"iforest: {other} / ours, batch {b}"] = o / ours
        lo = _find(lstm_rows, "onnx (shipped file)", b)
        lo_wall = _find(lstm_rows, "onnx (shipped file)", b, "per_window_wall_ms")
        for other in ("keras predict", "keras __call__"):
            o = _find(lstm_rows, other, b)
            o_wall = _find(lstm_rows, other, b, "per_window_wall_ms")
            if lo and o:
                ratios[f"lstm_ae: {other} / onnx, batch {b}"] = o / lo
            if lo_wall and o_wall:
                ratios[f"lstm_ae: {other} / onnx, batch {b} (wall clock)"] = o_wall / lo_wall
    speedup = kp1 / lstm1 if kp1 and lstm1 else None
    kp1_wall = _find(lstm_rows, "keras predict", 1, "per_window_wall_ms")
    lstm1_wall = _find(lstm_rows, "onnx (shipped file)", 1, "per_window_wall_ms")
    targets = [
        results.target("IF single row (ms)", ours1, "<=", 0.05, "ms"),
        results.target("LSTM single window (ms)", lstm1, "<=", 1.0, "ms"),
        results.target(f"LSTM per window, batch {big} (ms)", lstm_b, "<=", 0.25, "ms"),
        results.target("LSTM vs Keras predict, single window (x)", speedup, ">=", 100, "x"),
    ]
    summary = {
        "iforest_single_ms": ours1,
        "lstm_single_ms": lstm1,
        f"lstm_batch{big}_per_window_ms": lstm_b,
        "keras_predict_single_ms": kp1,
        "keras_call_single_ms": kc1,
        "lstm_speedup_vs_keras_predict": speedup,
        "wall_clock": {
            "iforest_single_ms": _find(
                if_rows, "onnx ours (shipped file)", 1, "per_window_wall_ms"
            ),
            "lstm_single_ms": lstm1_wall,
            f"lstm_batch{big}_per_window_ms": _find(
                lstm_rows, "onnx (shipped file)", big, "per_window_wall_ms"
            ),
            "keras_predict_single_ms": kp1_wall,
            "lstm_speedup_vs_keras_predict": kp1_wall / lstm1_wall
            if kp1_wall and lstm1_wall
            else None,
        },
        "ratios": ratios,
    }
    return summary, targets


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = model_sets.resolve_models(args.models, tiny=args.tiny)
    batches = (1, 16) if args.quick else BATCHES
    seconds = min(args.seconds, 0.2) if args.quick else args.seconds
    native = seed_models.native_models(models, epochs=args.keras_epochs, keras=not args.no_keras)
    print(f"model set: {models}")
    if_rows, if_info = bench_iforest(models, native, seconds, batches)
    lstm_rows, lstm_info = bench_lstm(models, None if args.no_keras else native, seconds, batches)
    set_rows = bench_model_set(models, seconds, batches)
    headers = ["case", "batch", "wall ms/call", "wall p99", "cpu ms/call", "cpu ms/window", "calls"]

    def table(rows: list[dict[str, Any]]) -> list[list[Any]]:
        return [
            [
                r["case"],
                r["batch"],
                r["per_call"]["median_ms"],
                r["per_call"]["p99_ms"],
                r["per_call"]["cpu_median_ms"],
                r["per_window_ms"],
                r["per_call"]["calls"],
            ]
            for r in rows
        ]

    results.print_table(
        headers,
        table(if_rows),
        f"Isolation Forest ({if_info['native_trees']} trees; graph nodes: ours "
        f"{if_info['ours_nodes']}, skl2onnx default "
        f"{if_info['skl2onnx_default_nodes']})",
    )
    results.print_table(headers, table(lstm_rows), "LSTM autoencoder")
    results.print_table(headers, table(set_rows), "Agent scoring call")
    summary, targets = summarise(if_rows, lstm_rows, batches)
    results.print_table(
        ["ratio", "x"],
        [[k, v] for k, v in summary["ratios"].items()],
        "Ratios of CPU time per window (same run; >1 means ours is faster)",
    )
    results.print_table(
        ["figure", "value", "target", "met"],
        [[t.figure, t.value, t.target, t.met] for t in targets],
        "Targets",
    )
    result = {
        "models": str(models),
        "settings": {
            "seconds_per_case": seconds,
            "batches": list(batches),
            "figures": "medians of process CPU time per call (ms/window = that / "
            "batch); wall-clock figures beside them",
            "ort_threads": 1,
            "ort_mem_arena": False,
            "keras": None
            if args.no_keras
            else {
                "trained_epochs": native.trained_epochs,
                "note": "same architecture as the shipped LSTM-AE; inference cost "
                "does not depend on the weights",
            },
        },
        "iforest": {"rows": if_rows, "info": if_info},
        "lstm_ae": {"rows": lstm_rows, "info": lstm_info},
        "model_set": {"rows": set_rows},
        "summary": summary,
        "targets": [t.to_dict() for t in targets],
    }
    if not args.no_write:
        print(f"\nwrote {results.write_result(args.name, result)}")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        type=Path,
        help="model set directory (default: models/ or a locally built small set)",
    )
    p.add_argument("--seconds", type=float, default=1.0, help="time per case")
    p.add_argument("--quick", action="store_true", help="batches 1 and 16, 0.2 s per case")
    p.add_argument(
        "--tiny",
        action="store_true",
        help="use a TensorFlow-free tiny model set when --models is not given (smoke tests)",
    )
    p.add_argument("--no-keras", action="store_true", help="skip Keras (no TensorFlow import)")
    p.add_argument(
        "--keras-epochs",
        type=int,
        default=1,
        help="epochs to train the native Keras model once (0 = untrained)",
    )
    p.add_argument("--name", default="inference", help="results/<name>.json")
    p.add_argument("--no-write", action="store_true", help="do not write the results file")
    return p


def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
