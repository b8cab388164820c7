"""Training from the console: guess a CSV's columns, run ``edge-train`` in a subprocess.

The console never imports the trainer (TensorFlow stays out of the console process): a job
is ``edge-train train ...`` as a child process whose progress lines are parsed into a
fraction for the progress bar. One job runs at a time (training takes the CPU).
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
import re
import sys
import time
import uuid
import zipfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.pipeline.table_columns import (
    GUESS_ROWS,
    guess_label_column,
    guess_timestamp_column,
    is_number,
    timestamp_candidates,
)
from edge_agent.pipeline.table_format import guess_decimal, guess_separator, normalised

_EPOCH = re.compile(r"lstm_ae epoch (\d+)/(\d+)")


@dataclass(frozen=True)
class CsvGuess:
    separator: str
    columns: list[str]
    timestamp: str | None
    sensors: list[str]
    label: str | None
    rows_sampled: int
    #: The decimal mark edge-train will guess too (its default --decimal auto).
    decimal: str = "."


def sniff_csv(path: Path, sample_bytes: int = 65536) -> CsvGuess:
    """Separator, decimal mark, timestamp column, sensor columns and label column, guessed
    from the head (as edge-train guesses them)."""
    with path.open("r", encoding="utf-8", errors="replace", newline="") as f:
        sample = f.read(sample_bytes)
    lines = sample.splitlines()
    if len(lines) > 2 and len(sample) == sample_bytes:
        lines = lines[:-1]  # the last line may be cut
    separator = guess_separator(lines[: GUESS_ROWS + 1])
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=separator))
    if not rows:
        raise ValueError(f"{path.name}: empty file")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if not body:
        raise ValueError(f"{path.name}: a header but no rows")
    decimal = guess_decimal(body[:GUESS_ROWS], separator)
    body = normalised(body, decimal) if decimal == "," else body
    values: dict[str, list[str]] = {h: [] for h in header}
    for row in body:
        for h, v in zip(header, row, strict=False):
            if v.strip():
                values[h].append(v.strip())
    numeric = {h for h, vs in values.items() if vs and all(is_number(v) for v in vs)}
    # edge-train's own guess (one source); where it declines, pre-fill the first candidate
    timestamp = guess_timestamp_column(header, body) or next(
        iter(timestamp_candidates(header, body)), None
    )
    label = guess_label_column(header, body)
    if label is not None and label not in numeric:
        label = None
    sensors = [h for h in header if h in numeric and h not in (timestamp, label)]
    return CsvGuess(separator, header, timestamp, sensors, label, len(body), decimal)


def training_available() -> bool:
    """The trainer and its heavy libraries are installed (the ``train`` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("training", "tensorflow"))


def progress_of(line: str) -> float | None:
    """Fraction done from one of edge-train's progress lines, when it tells."""
    m = _EPOCH.search(line)
    if m:
        return 0.25 + 0.6 * int(m.group(1)) / max(1, int(m.group(2)))
    for marker, fraction in (
        ("loading ", 0.03),
        ("split (chronological)", 0.06),
        ("importing scikit-learn and TensorFlow: done", 0.15),
        ("fitting Isolation Forest", 0.2),
        ("training LSTM autoencoder", 0.25),
        ("exporting both models", 0.87),
        ("written to", 0.92),
        ("writing the report", 0.95),
        ("] total ", 1.0),
    ):
        if marker in line:
            return fraction
    return None


@dataclass
class TrainingJob:
    id: str
    csv_path: Path
    out_dir: Path
    command: list[str]
    state: str = "queued"
    progress: float = 0.0
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=400))
    returncode: int | None = None
    started: float = 0.0
    ended: float | None = None

    async def run(self) -> None:
        self.state, self.started = "running", time.time()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            self.lines.append(f"cannot start the trainer: {exc}")
            self.state, self.ended = "failed", time.time()
            return
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            fraction = progress_of(line)
            if fraction is not None:
                self.progress = max(self.progress, min(fraction, 0.99))
        self.returncode = await proc.wait()
        ok = self.returncode == 0 and (self.out_dir / "manifest.json").is_file()
        self.state, self.progress = ("done", 1.0) if ok else ("failed", self.progress)
        self.ended = time.time()

    def report_markdown(self) -> str | None:
        path = self.out_dir / "report" / "report.md"
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def zip_model_set(self) -> bytes:
        """The model set (manifest, ONNX files, report) as a zip file."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(self.out_dir.rglob("*")):
                if path.is_file():
                    z.write(path, f"{self.out_dir.name}/{path.relative_to(self.out_dir)}")
        return buf.getvalue()


class TrainingJobs:
    """Jobs of this console process; one runs at a time."""

    def __init__(self, work_dir: Path, command: list[str] | None = None) -> None:
        self.work_dir = work_dir
        self.base_command = command or [sys.executable, "-m", "training"]
        self.jobs: dict[str, TrainingJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def uploads(self) -> Path:
        d = self.work_dir / "uploads"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def running(self) -> TrainingJob | None:
        return next((j for j in self.jobs.values() if j.state in ("queued", "running")), None)

    def start(
        self,
        csv_path: Path,
        *,
        timestamp: str,
        sensors: list[str],
        label: str | None,
        separator: str,
        extra: list[str] | None = None,
    ) -> TrainingJob:
        if self.running is not None:
            raise RuntimeError("a training job is already running")
        if not sensors:
            raise ValueError("choose at least one sensor column")
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        out_dir = self.work_dir / "runs" / job_id
        command = [
            *self.base_command, "train", "--data", str(csv_path), "--out", str(out_dir),
            "--timestamp-column", timestamp, "--sensors", ",".join(sensors),
            "--label-column", label or "none",
            "--separator", "\\t" if separator == "\t" else separator,
            *(extra or []),
        ]  # fmt: skip
        job = TrainingJob(job_id, csv_path, out_dir, command)
        self.jobs[job_id] = job
        task = asyncio.create_task(job.run(), name=f"training-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job
