"""Results of a benchmark run: the machine it ran on, the JSON file, tables, targets.

Every benchmark compares things *measured in the same run* (machines are noisy), prints a
table and writes ``benchmarks/results/<name>.json`` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
if str(REPO) not in sys.path:  # the harness and the project, for scripts run from anywhere
    sys.path.insert(0, str(REPO))

from edge_agent.pipeline.alerts import rfc3339  # noqa: E402
from harness.broker import mosquitto_version  # noqa: E402

_LIBRARIES = (
    "edge-agent",
    "numpy",
    "onnxruntime",
    "onnx",
    "aiomqtt",
    "paho-mqtt",
    "orjson",
    "pydantic",
    "prometheus-client",
    "scikit-learn",
    "skl2onnx",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "tf2onnx",
)

if str(REPO) not in sys.path:  # scripts run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------------------ machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge a figure: CPU, cores, memory, Python, library versions."""
    versions: dict[str, str] = {}
    for name in _LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    mem_total = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / 1024)
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_mb": mem_total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": versions,
        "mosquitto": mosquitto_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_result(name: str, payload: dict[str, Any], results_dir: Path | None = None) -> Path:
    """``results/<name>.json`` with the machine info and the time of the run added."""
    out_dir = results_dir or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "run_at": rfc3339(time.time(), "seconds"),
        "machine": machine_info(),
        **payload,
    }
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_table(headers: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    """A plain aligned text table (no dependency)."""
    cells = [[_fmt_cell(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    if title:
        print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)
            )
        )
    sys.stdout.flush()


def _fmt_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.1:
            return f"{value:.3f}"
        return f"{value:.4f}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?[x%]?", text))


@dataclass
class Target:
    """One figure against its target, for the combined summary of run_all.py."""

    figure: str
    value: float | None
    target: str
    met: bool | None
    unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "met": self.met,
        }


def target(figure: str, value: float | None, op: str, limit: float, unit: str = "") -> Target:
    """``op`` is ``<=`` or ``>=``; a missing value is 'not measured' (met None)."""
    text = f"{op} {limit:g}{(' ' + unit) if unit else ''}"
    if value is None:
        return Target(figure, None, text, None, unit)
    met = value <= limit if op == "<=" else value >= limit
    return Target(figure, float(value), text, met, unit)


# ------------------------------------------------------------------------------ scripts


def add_run_options(p: argparse.ArgumentParser, name: str, quick_help: str) -> None:
    """The options every agent benchmark shares: pinning, quick and tiny modes, its output."""
    p.add_argument("--pin", action="store_true", help="pin the agent to a core of its own")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--tiny", action="store_true", help="TensorFlow-free tiny model set")
    p.add_argument("--name", default=name, help="results/<name>.json")
    p.add_argument("--no-write", action="store_true", help="do not write the results file")


def save(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Write ``results/<args.name>.json`` unless ``--no-write``; the result, for chaining."""
    if not args.no_write:
        print(f"\nwrote {write_result(args.name, result)}")
    return result
