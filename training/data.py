"""Load a historian CSV into a regular, gap-free series the models can train on.

Any CSV works, not only the simulator's: the :class:`DataSpec` says which column holds
the time, which columns are sensors and which (if any) holds labels. Everything that
would silently poison a model — unparseable times, rows out of order, text in a sensor
column, long gaps, a sensor that never moves — is refused with a :class:`DataError`
that names the file, the column and the line, so the fix is obvious.

Only the csv module and numpy are used: pandas is deliberately not a dependency.
"""

from __future__ import annotations

import csv
import hashlib
import math
from array import array
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.ingest import parse_table_timestamp

#: Cell values read as "no reading" rather than as text.
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none"})
#: Refuse resampling into more bins than this (a step period far too small for the data).
MAX_BINS = 50_000_000


class DataError(ValueError):
    """Data that cannot be trained on; the message names the file, column and line."""


@dataclass(frozen=True)
class DataSpec:
    """How to read one historian export.

    ``sensors=None`` takes every numeric column except the timestamp, the label and the
    ``exclude`` columns. ``step_seconds=None`` uses the median spacing of the timestamps.
    Gaps of up to ``max_gap_seconds`` (missing cells or missing rows) are linearly
    interpolated after resampling; longer gaps are an error.
    """

    timestamp_column: str = "timestamp"
    separator: str = ","
    sensors: tuple[str, ...] | None = None
    label_column: str | None = "label"
    exclude: tuple[str, ...] = ()
    step_seconds: float | None = None
    max_gap_seconds: float = 5.0

    def __post_init__(self) -> None:
        if len(self.separator) != 1:
            raise DataError(f"separator must be one character, got {self.separator!r}")
        if self.step_seconds is not None and not self.step_seconds > 0:
            raise DataError(f"step_seconds must be positive, got {self.step_seconds}")
        if not self.max_gap_seconds >= 0:
            raise DataError(f"max_gap_seconds must be >= 0, got {self.max_gap_seconds}")
        if self.sensors is not None and len(self.sensors) == 0:
            raise DataError("sensors must name at least one column (or be null for all)")

    def with_overrides(self, **changes: Any) -> DataSpec:
        """A copy with the given fields replaced; ``None`` values leave a field unchanged."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Dataset:
    """A regular series: one row per ``step_seconds``, no gaps, float64 values."""

    timestamps: NDArray[np.float64]
    values: NDArray[np.float64]
    labels: NDArray[np.int8] | None
    sensors: tuple[str, ...]
    step_seconds: float
    source: Path
    sha256: str
    rows_read: int = 0
    interpolated_cells: int = 0
    ignored_columns: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[0])

    def part(self, steps: slice) -> Dataset:
        """The steps in ``steps`` (a chronological part, e.g. the test split)."""
        return replace(
            self,
            timestamps=self.timestamps[steps],
            values=self.values[steps],
            labels=None if self.labels is None else self.labels[steps],
        )


@dataclass(frozen=True)
class Split:
    """The fit part (fits the models and, out of fold, places their thresholds) and the
    test part after it (evaluation only; may be empty), as step slices."""

    fit: slice
    test: slice

    def sizes(self) -> dict[str, int]:
        return {name: int(s.stop - s.start) for name, s in (("fit", self.fit), ("test", self.test))}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_TOKENS


def _parse_number(cell: str) -> float | None:
    """The cell as a finite float; None when it is not a number (inf counts as not a number)."""
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


class _TimeParser:
    """Parses a timestamp column that is either all ISO 8601 or all Unix seconds."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.unix: bool | None = None

    def __call__(self, cell: str, line: int) -> float:
        text = cell.strip()
        if self.unix is None:
            self.unix = _parse_number(text) is not None
        if self.unix:
            v = _parse_number(text)
            if v is not None:
                return v
        elif _parse_number(text) is None:
            ts = parse_table_timestamp(text)  # naive historian times are taken as UTC
            if ts is not None:
                return ts
        kind = "Unix seconds like the first row" if self.unix else "ISO 8601 like the first row"
        raise DataError(
            f"{self.where}, line {line}: cannot parse timestamp {cell!r} "
            f"(expected {kind}; timestamps are ISO 8601 or Unix seconds)"
        )


class _Column:
    """Values of one candidate sensor column as read, with what was wrong in it."""

    __slots__ = ("first_numeric", "first_text", "missing", "values")

    def __init__(self) -> None:
        self.values = array("d")
        self.first_numeric: bool | None = None
        self.first_text: tuple[int, str] | None = None
        self.missing = 0

    def add(self, cell: str, line: int) -> None:
        if _is_missing(cell):
            self.values.append(math.nan)
            self.missing += 1
            return
        v = _parse_number(cell)
        if self.first_numeric is None:
            self.first_numeric = v is not None
        if v is None:
            if self.first_text is None:
                self.first_text = (line, cell)
            self.values.append(math.nan)
        else:
            self.values.append(v)


def _parse_label(cell: str, where: str, line: int) -> int:
    v = _parse_number(cell)
    if v is None:
        low = cell.strip().lower()
        if low in ("true", "false"):
            return int(low == "true")
        what = "missing label" if _is_missing(cell) else f"label {cell!r} is not 0 or 1"
        raise DataError(f"{where}, line {line}: {what}")
    if v not in (0.0, 1.0):
        raise DataError(f"{where}, line {line}: label {cell!r} is not 0 or 1")
    return int(v)


@dataclass
class _Raw:
    times: NDArray[np.float64]
    lines: NDArray[np.int64]
    raw_times: list[str]
    columns: dict[str, _Column]
    labels: NDArray[np.int8] | None
    header: list[str]


def _read_rows(path: Path, spec: DataSpec) -> _Raw:
    try:
        f = path.open("r", encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror}") from None
    with f:
        reader = csv.reader(f, delimiter=spec.separator)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: file is empty") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}, line 1: cannot read header: {exc}") from None
        if len(header) < 2:
            raise DataError(
                f"{path}, line 1: header has {len(header)} column ({header!r}); "
                f"is the separator {spec.separator!r} right?"
            )
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"{path}, line 1: duplicate column names {dupes}")
        index = {name: i for i, name in enumerate(header)}
        ts_col = spec.timestamp_column
        if ts_col not in index:
            raise DataError(
                f"{path}: no timestamp column {ts_col!r} (columns: {header}); "
                f"set data.timestamp_column or --timestamp-column"
            )
        label_col = spec.label_column
        if label_col is not None and label_col not in index:
            raise DataError(
                f"{path}: no label column {label_col!r} (columns: {header}); "
                f"use --label-column none for unlabelled data"
            )
        if spec.sensors is not None:
            absent = [s for s in spec.sensors if s not in index]
            if absent:
                raise DataError(f"{path}: sensor columns {absent} not found (columns: {header})")
            for s in spec.sensors:
                if s in (ts_col, label_col):
                    raise DataError(
                        f"{path}: column {s!r} cannot be both a sensor and {ts_col!r}/label"
                    )
            candidates = list(spec.sensors)
        else:
            skip = {ts_col, label_col, *spec.exclude}
            candidates = [h for h in header if h not in skip]
        cols = {name: _Column() for name in candidates}
        col_idx = [(index[name], cols[name]) for name in candidates]
        ts_i = index[ts_col]
        label_i = index[label_col] if label_col is not None else None
        times = array("d")
        lines = array("q")
        raw_times: list[str] = []
        labels = array("b")
        parse_time = _TimeParser(f"{path}, column {ts_col!r}")
        prev_t = -math.inf
        prev_line = 0
        n_fields = len(header)
        try:
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != n_fields:
                    raise DataError(
                        f"{path}, line {line}: {len(row)} fields, the header has {n_fields}"
                    )
                t = parse_time(row[ts_i], line)
                if t <= prev_t:
                    prev_raw = raw_times[-1]
                    if t == prev_t:
                        raise DataError(
                            f"{path}, line {line}, column {ts_col!r}: duplicate timestamp "
                            f"{row[ts_i]!r} (same as line {prev_line})"
                        )
                    raise DataError(
                        f"{path}, line {line}, column {ts_col!r}: timestamp {row[ts_i]!r} is "
                        f"earlier than line {prev_line} ({prev_raw!r}); rows must be in "
                        f"chronological order"
                    )
                prev_t, prev_line = t, line
                times.append(t)
                lines.append(line)
                raw_times.append(row[ts_i])
                for i, col in col_idx:
                    col.add(row[i], line)
                if label_i is not None:
                    labels.append(_parse_label(row[label_i], f"{path}, column {label_col!r}", line))
        except csv.Error as exc:
            raise DataError(f"{path}, line {reader.line_num}: malformed CSV: {exc}") from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text: {exc}") from None
    if len(times) < 2:
        raise DataError(f"{path}: needs at least 2 data rows, found {len(times)}")
    return _Raw(
        times=np.frombuffer(times, dtype=np.float64).copy(),
        lines=np.frombuffer(lines, dtype=np.int64).copy(),
        raw_times=raw_times,
        columns=cols,
        labels=np.frombuffer(labels, dtype=np.int8).copy() if label_i is not None else None,
        header=header,
    )


def _select_sensors(path: Path, spec: DataSpec, raw: _Raw) -> tuple[list[str], list[str]]:
    """Sensor columns, and auto-mode columns skipped because they hold text or nothing."""
    sensors: list[str] = []
    ignored: list[str] = []
    explicit = spec.sensors is not None
    for name, col in raw.columns.items():
        if col.first_numeric is None:  # every cell missing
            if explicit:
                raise DataError(f"{path}, column {name!r}: no values at all")
            ignored.append(name)
            continue
        if not explicit and not col.first_numeric:
            ignored.append(name)  # a text column such as fault_kind: not a sensor
            continue
        if col.first_text is not None:
            line, cell = col.first_text
            raise DataError(f"{path}, line {line}, column {name!r}: value {cell!r} is not a number")
        sensors.append(name)
    if not sensors:
        raise DataError(
            f"{path}: no numeric sensor columns (columns: {raw.header}); name them with "
            f"data.sensors or --sensors"
        )
    return sensors, ignored


def _infer_step(path: Path, times: NDArray[np.float64]) -> float:
    step = float(np.median(np.diff(times)))
    if not step > 0:
        raise DataError(f"{path}: cannot infer the step period; set data.step_seconds")
    return step


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    if not mask.any():
        return []
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _gap_place(raw: _Raw, bins: NDArray[np.int64], a: int, b: int) -> str:
    """Where bins [a, b) lie in the source file, by line number and timestamp."""
    before = int(np.searchsorted(bins, a, side="left")) - 1
    after = int(np.searchsorted(bins, b, side="left"))
    if before < 0:
        return (
            f"at the start of the file, before line {raw.lines[after]} ({raw.raw_times[after]!r})"
        )
    if after >= len(bins):
        return f"at the end of the file, after line {raw.lines[before]} ({raw.raw_times[before]!r})"
    return (
        f"between line {raw.lines[before]} ({raw.raw_times[before]!r}) "
        f"and line {raw.lines[after]} ({raw.raw_times[after]!r})"
    )


def load_csv(path: Path | str, spec: DataSpec) -> Dataset:
    """Read, validate and resample one CSV to a regular series (see module docstring)."""
    path = Path(path)
    raw = _read_rows(path, spec)
    sensors, ignored = _select_sensors(path, spec, raw)
    step = spec.step_seconds if spec.step_seconds is not None else _infer_step(path, raw.times)
    origin = math.floor(raw.times[0] / step) * step
    bins = np.floor((raw.times - origin) / step + 1e-9).astype(np.int64)
    n_bins = int(bins[-1]) + 1
    if n_bins > MAX_BINS:
        raise DataError(
            f"{path}: {n_bins} steps of {step:g} s between the first and last row; "
            f"is step_seconds right?"
        )
    rows_per_bin = np.bincount(bins, minlength=n_bins)
    max_gap_steps = math.floor(spec.max_gap_seconds / step + 1e-9)
    limit = f"at most {max_gap_steps} missing steps ({spec.max_gap_seconds:g} s) are interpolated"
    for a, b in _runs(rows_per_bin == 0):
        if b - a > max_gap_steps:
            raise DataError(
                f"{path}: no readings for {b - a} steps ({(b - a) * step:g} s) "
                f"{_gap_place(raw, bins, a, b)}; {limit} (data.max_gap_seconds)"
            )
    values = np.empty((n_bins, len(sensors)), dtype=np.float64)
    interpolated = 0
    steps_idx = np.arange(n_bins, dtype=np.float64)
    for j, name in enumerate(sensors):
        v = np.frombuffer(raw.columns[name].values, dtype=np.float64)
        ok = ~np.isnan(v)
        counts = np.bincount(bins, weights=ok.astype(np.float64), minlength=n_bins)
        sums = np.bincount(bins, weights=np.where(ok, v, 0.0), minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            col = sums / counts
        missing = counts == 0
        for a, b in _runs(missing):
            if b - a > max_gap_steps:
                raise DataError(
                    f"{path}, column {name!r}: {b - a} missing steps ({(b - a) * step:g} s) "
                    f"{_gap_place(raw, bins, a, b)}; {limit} (data.max_gap_seconds)"
                )
        if missing.any():
            col[missing] = np.interp(steps_idx[missing], steps_idx[~missing], col[~missing])
            interpolated += int(missing.sum())
        if col.max() == col.min():
            raise DataError(
                f"{path}, column {name!r}: constant value {col[0]:g} on every row; a constant "
                f"sensor cannot be scaled — leave it out (data.sensors or data.exclude)"
            )
        values[:, j] = col
    labels: NDArray[np.int8] | None = None
    if raw.labels is not None:
        lab = np.zeros(n_bins, dtype=np.int8)
        np.maximum.at(lab, bins, raw.labels)
        empty = rows_per_bin == 0
        if empty.any():  # a filled-in step is anomalous if a neighbour is
            idx = np.arange(n_bins)
            prev_i = np.maximum.accumulate(np.where(empty, 0, idx))
            next_i = np.minimum.accumulate(np.where(empty, n_bins - 1, idx)[::-1])[::-1]
            lab[empty] = np.maximum(lab[prev_i], lab[next_i])[empty]
        labels = lab
    return Dataset(
        timestamps=origin + step * np.arange(n_bins, dtype=np.float64),
        values=values,
        labels=labels,
        sensors=tuple(sensors),
        step_seconds=float(step),
        source=path,
        sha256=sha256_of(path),
        rows_read=len(raw.times),
        interpolated_cells=interpolated,
        ignored_columns=tuple(ignored),
    )


def chronological_split(n_steps: int, test_fraction: float) -> Split:
    """The first ``1 - test_fraction`` of the steps to fit, the rest to test.

    Chronological (not shuffled) so that no future data leaks into fitting and the test
    part looks like what the agent will see next.
    """
    if not 0 <= test_fraction < 1:
        raise DataError(f"split: test fraction must be in [0, 1), got {test_fraction}")
    a = n_steps - round(n_steps * test_fraction)
    return Split(fit=slice(0, a), test=slice(a, n_steps))
