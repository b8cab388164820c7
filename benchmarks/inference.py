"""Inference cost per window: the agent's ONNX graphs vs the libraries they replace.

Isolation Forest (on the same feature rows): our path-length graph (the shipped file, and
the same graph converted from the native forest), skl2onnx's stock converter on that
native forest, and sklearn's ``decision_function``. LSTM autoencoder (on the same raw
windows): the shipped ONNX graph vs Keras ``predict`` and Keras ``__call__`` on a model of
the same architecture. Batches of 1, 16 and 256 windows. onnxruntime runs as the agent
runs it: one intra-op thread, CPU memory arena on (the agent's default).

    python benchmarks/inference.py [--models DIR] [--seconds 1.0] [--quick] [--no-keras]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_sets
import results
import seed_models
from inference_cases import bench_iforest, bench_lstm, bench_model_set

BATCHES = (1, 16, 256)


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
            "ort_mem_arena": True,
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
