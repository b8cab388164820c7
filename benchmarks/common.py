"""Shared plumbing of the benchmarks: machine info, results files, timing, model sets, brokers.

Every benchmark compares things *measured in the same run* (machines are noisy), prints a
table and writes ``benchmarks/results/<name>.json`` with the machine it ran on. Nothing here
downloads anything: model sets are either given (``--models``), the shipped ``models/``, or
built locally with the project's own training code and cached in :func:`cache_dir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"

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


def mosquitto_version() -> str | None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5)
        m = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
        if m:
            return m.group(1)
    return None


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
        "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
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


# ------------------------------------------------------------------------------ timing


@dataclass
class Timing:
    """Per-call times of one benchmarked callable, in milliseconds.

    ``cpu_*`` is the process CPU time of the call (all threads): on a shared machine the
    wall clock also counts the time spent waiting for a core, the CPU time does not, so it
    is the better estimate of the cost on a core of one's own. Both are reported.
    """

    calls: int
    median_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    cpu_median_ms: float
    cpu_mean_ms: float

    def to_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "median_ms": self.median_ms,
            "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms,
            "min_ms": self.min_ms,
            "cpu_median_ms": self.cpu_median_ms,
            "cpu_mean_ms": self.cpu_mean_ms,
        }


def time_calls(
    fn: Callable[[], Any],
    *,
    seconds: float = 1.0,
    min_calls: int = 5,
    max_calls: int = 100_000,
    warmup: int = 3,
) -> Timing:
    """Call ``fn`` for about ``seconds`` (at least ``min_calls`` times); per-call statistics."""
    for _ in range(warmup):
        fn()
    wall: list[float] = []
    cpu: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(wall) < max_calls and (len(wall) < min_calls or time.perf_counter() < deadline):
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        fn()
        wall.append((time.perf_counter_ns() - t0) / 1e6)
        cpu.append((time.process_time_ns() - c0) / 1e6)
    wall.sort()
    return Timing(
        calls=len(wall),
        median_ms=statistics.median(wall),
        p99_ms=wall[min(len(wall) - 1, int(0.99 * len(wall)))],
        mean_ms=statistics.fmean(wall),
        min_ms=wall[0],
        cpu_median_ms=statistics.median(cpu),
        cpu_mean_ms=statistics.fmean(cpu),
    )


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


# ------------------------------------------------------------------------------ processes


def cache_dir() -> Path:
    """Where built model sets and native (Keras/sklearn) models are kept between runs."""
    base = os.environ.get("EDGE_BENCH_CACHE") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "edge-agent-bench"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def venv_bin(name: str) -> str:
    """An executable of the running interpreter's environment (the agent's console scripts)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def free_port() -> int:
    port: int = _test_harness().free_port()
    return port


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (Linux), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_rss_mb(pid: int) -> float | None:
    """Resident set size in MiB from /proc/<pid>/statm."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * _PAGE / (1024 * 1024)


def proc_fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class CpuMeter:
    """CPU % of one process between :meth:`start` and :meth:`stop` (100 % = one core busy)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu0 = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self._cpu0 = proc_cpu_seconds(self.pid) or 0.0
        self._t0 = time.monotonic()

    def stop(self) -> float | None:
        cpu = proc_cpu_seconds(self.pid)
        elapsed = time.monotonic() - self._t0
        if cpu is None or elapsed <= 0:
            return None
        return 100.0 * (cpu - self._cpu0) / elapsed


def pin_to_cpu(pid: int, cpus: set[int] | None) -> bool:
    """Restrict a process to ``cpus`` (sched_setaffinity); False where that is not possible."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:
        return False
    return True


def cpu_split(pin: bool | None = None) -> tuple[set[int] | None, set[int] | None]:
    """(agent CPUs, everything-else CPUs) when pinning: the agent alone on the last core.

    Off unless asked (``pin`` or ``EDGE_BENCH_PIN=1``): pinning only isolates the agent when
    nothing else runs on the machine; on a shared machine it can trap the agent on a busy
    core. Unpinned, a single-threaded agent still cannot use more than one core; its CPU %
    (100 % = one core) is reported either way.
    """
    if pin is None:
        pin = os.environ.get("EDGE_BENCH_PIN", "") not in ("", "0")
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int | None:
    """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


# ------------------------------------------------------------------------------ Mosquitto


def _test_harness() -> Any:
    """tests/mosquitto.py: the brokers the integration tests start, reused as they are."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import mosquitto  # type: ignore[import-not-found]

    return mosquitto


def make_broker(workdir: Path, **options: Any) -> Any:
    """A Mosquitto on a free port, as in the integration tests (persistence, sessions):
    ``with make_broker(dir) as b:`` or ``.start()``/``.kill()``."""
    return _test_harness().MosquittoBroker(workdir, **options)


@contextlib.contextmanager
def running_broker(workdir: Path, cpus: set[int] | None = None, **options: Any) -> Iterator[Any]:
    broker = make_broker(workdir, **options)
    broker.start()
    if broker.pid is not None:
        pin_to_cpu(broker.pid, cpus)
    try:
        yield broker
    finally:
        broker.kill()


# ------------------------------------------------------------------------------ Prometheus


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class MetricsSnapshot:
    """Samples of one scrape of a Prometheus text endpoint."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> MetricsSnapshot:
        out = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if not m:
                continue
            labels = dict(_LABEL.findall(m.group(2) or ""))
            try:
                value = float(m.group(3))
            except ValueError:
                continue
            out.append((m.group(1), labels, value))
        return cls(out)

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent).

        Counters are exposed as ``<name>_total``; either spelling works.
        """
        names = {name, f"{name}_total"}
        return sum(
            v
            for n, lab, v in self.samples
            if n in names and all(lab.get(k) == x for k, x in labels.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        names = {name, f"{name}_total"}
        out: dict[str, float] = {}
        for n, lab, v in self.samples:
            if n in names and label in lab:
                out[lab[label]] = out.get(lab[label], 0.0) + v
        return out

    def histogram(self, name: str) -> Histogram:
        buckets: dict[float, float] = {}
        for n, lab, v in self.samples:
            if n == f"{name}_bucket" and "le" in lab:
                le = float("inf") if lab["le"] == "+Inf" else float(lab["le"])
                buckets[le] = buckets.get(le, 0.0) + v
        return Histogram(
            sorted(buckets.items()), self.value(f"{name}_count"), self.value(f"{name}_sum")
        )


@dataclass
class Histogram:
    """Cumulative Prometheus buckets; quantiles are bucket upper bounds (conservative)."""

    buckets: list[tuple[float, float]]
    count: float
    sum: float

    def minus(self, before: Histogram) -> Histogram:
        prev = dict(before.buckets)
        return Histogram(
            [(le, c - prev.get(le, 0.0)) for le, c in self.buckets],
            self.count - before.count,
            self.sum - before.sum,
        )

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (None without observations)."""
        if self.count <= 0:
            return None
        rank = q * self.count
        for le, c in self.buckets:
            if c >= rank:
                return le
        return float("inf")

    def max_bound(self) -> float | None:
        """Upper bound of the highest non-empty bucket: 'never above this'."""
        if self.count <= 0:
            return None
        prev = 0.0
        top = None
        for le, c in self.buckets:
            if c > prev:
                top = le
            prev = c
        return top

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def scrape(port: int, host: str = HOST, timeout: float = 5.0) -> MetricsSnapshot:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as resp:
        return MetricsSnapshot.parse(resp.read().decode("utf-8", errors="replace"))


# ------------------------------------------------------------------------------ data


def simulated_series(n_steps: int, seed: int = 0, day_seconds: float = 3600.0) -> np.ndarray:
    """(n_steps, 8) healthy readings from the project's thermal-unit simulator."""
    from edge_agent.tools.simulator import ThermalUnitSimulator

    sim = ThermalUnitSimulator(seed=seed, day_seconds=day_seconds)
    return np.asarray(sim.generate(n_steps).values, dtype=np.float32)


# ------------------------------------------------------------------------------ model sets


def default_models_dir() -> Path | None:
    """The shipped model set (``make models``) when it exists."""
    shipped = REPO / "models"
    return shipped if (shipped / "manifest.json").is_file() else None


def resolve_models(models: Path | None, *, tiny: bool = False) -> Path:
    """The model set to benchmark: ``--models``, else the shipped one, else a locally built one.

    ``tiny`` (smoke tests) builds a TensorFlow-free set in seconds (see
    :func:`build_tiny_model_set`); otherwise a small but real set is trained with the
    project's pipeline once (about 1–2 minutes) and cached.
    """
    if models is not None:
        if not (Path(models) / "manifest.json").is_file():
            raise SystemExit(f"error: {models}/manifest.json not found")
        return Path(models)
    if tiny:
        out = cache_dir() / "models-tiny"
        if not (out / "manifest.json").is_file():
            build_tiny_model_set(out)
        return out
    shipped = default_models_dir()
    if shipped is not None:
        return shipped
    out = cache_dir() / "models-small"
    if not (out / "manifest.json").is_file():
        build_small_model_set(out)
    return out


def build_small_model_set(out: Path) -> Path:
    """A real model set from the training pipeline on 8 000 simulated steps, trained briefly.

    Same architecture and shapes as the shipped set (200 trees, window 60, LSTM 64-32-32-64);
    only the amount of training differs, which does not change the inference cost.
    """
    from edge_agent.tools.simulator import generate_dataset
    from training.pipeline import load_config, train

    print(f"building a small model set in {out} (once; cached) …", flush=True)
    work = out.parent / (out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "simulated.csv"
    generate_dataset(8000, 4, seed=0, day_seconds=3600.0).to_csv(csv)
    cfg = load_config(
        REPO / "config" / "training.yaml"
        if (REPO / "config" / "training.yaml").is_file()
        else None,
        {
            "data.path": str(csv),
            "output_dir": str(out),
            "lstm_ae.epochs": 2,
            "lstm_ae.max_train_windows": 1500,
            "report": False,
            "tracking.enabled": False,  # a benchmark fixture, not a run to register
        },
    )
    train(cfg, progress=lambda s: None)
    return out


def build_tiny_model_set(out: Path, *, window: int = 60, trees: int = 20) -> Path:
    """A valid model set without TensorFlow, in a few seconds, for the smoke tests.

    Isolation Forest: the project's own fit + export (fewer trees). LSTM autoencoder: one
    ONNX ``LSTM`` layer written with ``onnx.helper`` (raw window in; window_error and
    sensor_error out, like the real graph), with random weights. Structurally what the agent
    loads; not a model to detect anything with.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_agent.pipeline.features import compute_series_features, default_feature_spec
    from edge_agent.pipeline.manifest import FORMAT_VERSION, Manifest, sha256_file
    from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names
    from training.iforest import export_iforest, fit_iforest

    out.mkdir(parents=True, exist_ok=True)
    names = sensor_names(THERMAL_UNIT_SENSORS)
    n = len(names)
    series = simulated_series(3000, seed=1)
    spec = default_feature_spec(names, 10)
    feats = compute_series_features(series, spec)
    pipe = fit_iforest(feats, n_estimators=trees, max_samples=128, seed=0)
    if_info = export_iforest(pipe, spec.n_features, out / "iforest.onnx")

    center = series.mean(axis=0).astype(np.float32)
    scale = np.maximum(series.std(axis=0), 1e-3).astype(np.float32)
    rng = np.random.default_rng(0)
    hidden = n
    w = (rng.normal(0, 0.2, (1, 4 * hidden, n))).astype(np.float32)
    r = (rng.normal(0, 0.2, (1, 4 * hidden, hidden))).astype(np.float32)
    b = np.zeros((1, 8 * hidden), np.float32)
    inits = [
        numpy_helper.from_array(a, nm)
        for a, nm in (
            (center, "center"),
            (scale, "scale"),
            (w, "W"),
            (r, "R"),
            (b, "B"),
            (np.array([1], np.int64), "ax1"),
            (np.array([1, 2], np.int64), "ax12"),
        )
    ]
    nodes = [
        helper.make_node("Sub", ["window", "center"], ["c"]),
        helper.make_node("Div", ["c", "scale"], ["z"]),
        helper.make_node("Transpose", ["z"], ["zt"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["zt", "W", "R", "B"], ["y"], hidden_size=hidden),
        helper.make_node("Squeeze", ["y", "ax1"], ["ys"]),
        helper.make_node("Transpose", ["ys"], ["rec"], perm=[1, 0, 2]),
        helper.make_node("Sub", ["z", "rec"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "ax1"], ["sensor_error"], keepdims=0),
        helper.make_node("ReduceMean", ["sq", "ax12"], ["window_error"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_lstm_ae",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, [None, window, n])],
        [
            helper.make_tensor_value_info("window_error", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("sensor_error", TensorProto.FLOAT, [None, n]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out / "lstm_ae.onnx"))

    manifest = {
        "format_version": FORMAT_VERSION,
        "model_set_version": "bench-tiny",
        "created_at": "2026-01-01T00:00:00Z",
        "training_data_sha256": "0" * 64,
        "sensors": [s.to_dict() for s in THERMAL_UNIT_SENSORS],
        "window": window,
        "step_seconds": 1.0,
        "features": spec.to_dict(),
        "models": {
            "iforest": {
                "kind": "iforest",
                "file": "iforest.onnx",
                "sha256": sha256_file(out / "iforest.onnx"),
                "input_name": if_info["input_name"],
                "input_kind": "features",
                "input_shape": if_info["input_shape"],
                "score_output": if_info["score_output"],
                "score_sign": if_info["score_sign"],
                "threshold": 0.1,
                "score_scale": 0.05,
                "params": {"n_estimators": trees, "max_samples": 128, "seed": 0},
            },
            "lstm_ae": {
                "kind": "lstm_ae",
                "file": "lstm_ae.onnx",
                "sha256": sha256_file(out / "lstm_ae.onnx"),
                "input_name": "window",
                "input_kind": "window",
                "input_shape": [None, window, n],
                "score_output": "window_error",
                "score_sign": 1,
                "per_sensor_output": "sensor_error",
                "threshold": 5.0,
                "score_scale": 1.0,
                "params": {},
            },
        },
        "voting": {
            "strategy": "weighted",
            "weights": {"iforest": 0.4, "lstm_ae": 0.6},
            "threshold": 0.5,
        },
        "metrics": {},
    }
    Manifest.model_validate(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def manifest_digest(models: Path) -> str:
    return hashlib.sha256((models / "manifest.json").read_bytes()).hexdigest()[:16]


def load_manifest_dict(models: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((models / "manifest.json").read_text(encoding="utf-8"))
    return data


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
        series = _series_for(sensors, 6000)
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
            series = _series_for(sensors, 6000)
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


def _series_for(sensors: list[str], n_steps: int) -> np.ndarray:
    """Simulated readings for these sensors (thermal-unit names), else scaled noise."""
    from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names

    names = sensor_names(THERMAL_UNIT_SENSORS)
    if all(s in names for s in sensors):
        full = simulated_series(n_steps, seed=3)
        return np.ascontiguousarray(full[:, [names.index(s) for s in sensors]])
    rng = np.random.default_rng(3)
    return (50 + 5 * rng.standard_normal((n_steps, len(sensors)))).astype(np.float32)


def sample_windows(models: Path, count: int, seed: int = 7) -> np.ndarray:
    """(count, window, sensors) float32 windows of simulated readings for this model set."""
    man = load_manifest_dict(models)
    window = int(man["window"])
    sensors = [s["name"] for s in man["sensors"]]
    series = _series_for(sensors, window + count + 10)
    from edge_agent.pipeline.windows import sliding_windows

    return np.ascontiguousarray(sliding_windows(series, window)[:count])


# ------------------------------------------------------------------------------ raw MQTT


class RawSubscriber:
    """A minimal MQTT 3.1.1 subscriber on a plain socket, in a thread.

    A Python MQTT client tops out near the ingest ceiling this project measures; counting
    10 k score messages/s needs less per message than that. Acknowledges QoS 1 deliveries
    (PUBACK) and calls ``on_message(topic, payload, arrival)`` from its thread, where
    ``arrival`` is the wall-clock time the chunk holding the message was read. Reconnects
    (same client id, clean session off) when the broker goes away, until :meth:`close`.
    """

    def __init__(
        self,
        port: int,
        filters: list[tuple[str, int]],
        on_message: Callable[[str, bytes, float], None],
        *,
        client_id: str = "bench-subscriber",
        host: str = HOST,
    ) -> None:
        import threading

        self.port, self.host, self.filters = port, host, filters
        self.on_message = on_message
        self.client_id = client_id
        self.subscribed = threading.Event()
        self.reconnects = 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="raw-subscriber")

    def start(self, timeout: float = 10.0) -> RawSubscriber:
        self._thread.start()
        if not self.subscribed.wait(timeout):
            raise RuntimeError(f"subscriber could not subscribe on port {self.port}")
        return self

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.sendall(b"\xe0\x00")
                self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def _connect(self) -> socket.socket:
        import struct

        sock = socket.create_connection((self.host, self.port), timeout=2.0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        cid = self.client_id.encode()
        body = (
            struct.pack("!H", 4)
            + b"MQTT"
            + bytes([4, 0x00])
            + struct.pack("!H", 0)
            + struct.pack("!H", len(cid))
            + cid
        )  # clean session off: keep subscriptions
        sock.sendall(b"\x10" + _varint(len(body)) + body)
        ack = b""
        while len(ack) < 4:
            chunk = sock.recv(4 - len(ack))
            if not chunk:
                raise ConnectionError("closed before CONNACK")
            ack += chunk
        if ack[3] != 0:
            raise ConnectionError(f"CONNACK refused {ack!r}")
        payload = b"".join(
            struct.pack("!H", len(t.encode())) + t.encode() + bytes([q]) for t, q in self.filters
        )
        body = struct.pack("!H", 1) + payload
        sock.sendall(b"\x82" + _varint(len(body)) + body)
        sock.settimeout(0.5)
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sock = self._connect()
            except OSError:
                time.sleep(0.1)
                continue
            with contextlib.suppress(OSError):
                self._read(self._sock)
            if not self._stop.is_set():
                self.reconnects += 1
                time.sleep(0.05)

    def _read(self, sock: socket.socket) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return
            arrival = time.time()
            buf += chunk
            pos, acks = 0, []
            n = len(buf)
            while pos < n:
                header = buf[pos]
                length, mult, i = 0, 1, pos + 1
                while i < n:
                    b = buf[i]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    break  # incomplete length
                if i + length > n:
                    break  # incomplete packet
                kind = header >> 4
                if kind == 3:
                    qos = (header >> 1) & 3
                    tlen = (buf[i] << 8) | buf[i + 1]
                    topic = bytes(buf[i + 2 : i + 2 + tlen]).decode()
                    j = i + 2 + tlen
                    if qos:
                        acks.append(b"\x40\x02" + bytes(buf[j : j + 2]))
                        j += 2
                    self.on_message(topic, bytes(buf[j : i + length]), arrival)
                elif kind == 9:
                    self.subscribed.set()
                pos = i + length
            del buf[:pos]
            if acks:
                sock.sendall(b"".join(acks))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def start_loadgen(
    port: int,
    *,
    units: int,
    mode: str,
    rate: float,
    duration: float,
    summary: Path,
    cpus: set[int] | None = None,
    announce: bool = False,
    **options: Any,
) -> subprocess.Popen[str]:
    """Start ``loadgen.py`` in its own process, pinned to ``cpus``.

    ``options`` become flags (``fault_units=2`` → ``--fault-units 2``). With ``announce`` its
    stdout is a pipe whose first line says when publishing starts; otherwise it is discarded.
    """
    cmd = [
        sys.executable, str(Path(__file__).resolve().parent / "loadgen.py"),
        "--port", str(port), "--units", str(units), "--mode", mode,
        "--rate", str(rate), "--duration", str(duration), "--summary", str(summary),
    ]  # fmt: skip
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    gen = subprocess.Popen(
        cmd, stdout=subprocess.PIPE if announce else subprocess.DEVNULL, text=True
    )
    pin_to_cpu(gen.pid, cpus)
    return gen
