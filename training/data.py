"""Load a historian CSV into a regular series the models can train on.

Any CSV works, not only the simulator's: the :class:`DataSpec` says which column holds
the time, which columns are sensors and which (if any) holds labels. Everything that
would silently poison a model — unparseable times, rows out of order, text in a sensor
column, a named sensor that never moves — is refused with a :class:`DataError` that names
the file, the column and the line, so the fix is obvious.

Gaps up to ``max_gap_seconds`` are interpolated. A longer one (an outage, a historian
that stopped, one transmitter out for an hour) is not an error — a plant's export has them
— and is not invented either: its steps are filled only to keep the grid regular and marked
in :attr:`Dataset.gap_steps`, and :meth:`Dataset.window_ends` never yields a window that
touches them, so no model is fitted, calibrated or judged on made-up readings. The agent
does the same live: a stale step empties the unit's window and scoring restarts after it.

Only the csv module and numpy are used: pandas is deliberately not a dependency.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from training.csv_reader import (
    DataError,
    DataSpec,
    RawTable,
    read_rows,
)

#: Refuse resampling into more bins than this (a step period far too small for the data).
MAX_BINS = 50_000_000


@dataclass(frozen=True)
class Gap:
    """Steps ``[start, stop)`` without a reading (of any sensor, or of ``column``) for longer
    than ``max_gap_seconds``; ``place`` says where in the file."""

    start: int
    stop: int
    place: str
    column: str | None = None

    @property
    def steps(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Dataset:
    """A regular series: one row per ``step_seconds``, float64 values; steps inside a long
    gap are filled and marked in ``gap_steps`` (see the module docstring)."""

    timestamps: NDArray[np.float64]
    values: NDArray[np.float64]
    labels: NDArray[np.int8] | None
    sensors: tuple[str, ...]
    step_seconds: float
    source: Path
    sha256: str
    rows_read: int = 0
    interpolated_cells: int = 0
    #: Per sensor: text cells read as missing readings (a historian's "Bad Input"), as
    #: (count, line of the first, the first).
    text_cells: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    ignored_columns: tuple[str, ...] = field(default_factory=tuple)
    #: Numeric columns left out because they never moved (only when sensors were not named).
    constant_columns: tuple[str, ...] = field(default_factory=tuple)
    #: The columns read as the time and the labels, and which of the two were guessed.
    timestamp_column: str = "timestamp"
    label_column: str | None = None
    guessed_columns: tuple[str, ...] = field(default_factory=tuple)
    #: The field separator and decimal mark the file was read with (given or guessed).
    separator: str = ","
    decimal: str = "."
    #: The time layout read with (``iso`` or a strptime format) and any others that read the
    #: column exactly as well (day or month first, in a file of one day).
    time_format: str = "iso"
    time_format_alike: tuple[str, ...] = field(default_factory=tuple)
    #: True at steps filled in across a gap longer than ``max_gap_seconds`` (None: no gaps).
    gap_steps: NDArray[np.bool_] | None = None
    gaps: tuple[Gap, ...] = field(default_factory=tuple)

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[0])

    @property
    def gap_step_count(self) -> int:
        """Steps filled in across long gaps (none of them is inside a window)."""
        return 0 if self.gap_steps is None else int(self.gap_steps.sum())

    def real(self, steps: slice) -> NDArray[np.bool_]:
        """Which of ``steps`` hold readings (are not filled in across a long gap)."""
        n = len(range(*steps.indices(self.n_steps)))
        return np.ones(n, dtype=bool) if self.gap_steps is None else ~self.gap_steps[steps]

    def window_ends(self, window: int, steps: slice | None = None) -> NDArray[np.int64]:
        """The steps in ``steps`` (default: all) that end a full window of ``window`` steps
        touching no long gap: the steps a model may be fitted on, calibrated on or judged
        at, as the agent would score them."""
        lo, hi, _ = (steps or slice(None)).indices(self.n_steps)
        ends = np.arange(max(lo, window - 1), hi, dtype=np.int64)
        if self.gap_steps is None or len(ends) == 0:
            return ends
        filled = np.concatenate(([0], np.cumsum(self.gap_steps, dtype=np.int64)))
        return ends[filled[ends + 1] == filled[ends + 1 - window]]

    def segments(self, steps: slice) -> list[slice]:
        """The runs of real steps (no long gap) within ``steps``, as slices of the dataset."""
        lo, hi, _ = steps.indices(self.n_steps)
        if self.gap_steps is None:
            return [slice(lo, hi)] if hi > lo else []
        real = ~self.gap_steps[lo:hi]
        return [slice(lo + a, lo + b) for a, b in _runs(real)]

    def part(self, steps: slice) -> Dataset:
        """The steps in ``steps`` (a chronological part, e.g. the test split)."""
        return replace(
            self,
            timestamps=self.timestamps[steps],
            values=self.values[steps],
            labels=None if self.labels is None else self.labels[steps],
            gap_steps=None if self.gap_steps is None else self.gap_steps[steps],
            gaps=(),
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


def _select_sensors(path: Path, spec: DataSpec, raw: RawTable) -> tuple[list[str], list[str]]:
    """Sensor columns, and auto-mode columns skipped because they hold text or nothing."""
    sensors: list[str] = []
    ignored: list[str] = []
    explicit = spec.sensors is not None
    for name, col in raw.columns.items():
        if col.numbers == col.texts == 0:  # every cell missing
            if explicit:
                raise DataError(f"{path}, column {name!r}: no values at all")
            ignored.append(name)
            continue
        if col.texts >= col.numbers:  # a text column such as fault_kind: not a sensor
            if explicit:
                line, cell = col.first_text or (0, "")
                raise DataError(
                    f"{path}, column {name!r}: {col.texts} of {col.texts + col.numbers} values "
                    f"are not numbers (the first: {cell!r}, line {line}); not a sensor"
                )
            ignored.append(name)
            continue
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


def _gap_place(raw: RawTable, bins: NDArray[np.int64], a: int, b: int) -> str:
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
    raw = read_rows(path, spec)
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
    gap_steps = np.zeros(n_bins, dtype=bool)
    gaps: list[Gap] = []
    for a, b in _runs(rows_per_bin == 0):
        if b - a > max_gap_steps:
            gap_steps[a:b] = True
            gaps.append(Gap(a, b, _gap_place(raw, bins, a, b)))
    columns: list[NDArray[np.float64]] = []
    constant: list[str] = []
    interpolated = 0
    steps_idx = np.arange(n_bins, dtype=np.float64)
    for name in sensors:
        v = np.frombuffer(raw.columns[name].values, dtype=np.float64)
        ok = ~np.isnan(v)
        counts = np.bincount(bins, weights=ok.astype(np.float64), minlength=n_bins)
        sums = np.bincount(bins, weights=np.where(ok, v, 0.0), minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            col = sums / counts
        missing = counts == 0
        if missing.all():
            raise DataError(f"{path}, column {name!r}: no values at all")
        short = missing.copy()
        for a, b in _runs(missing):
            if b - a > max_gap_steps:
                short[a:b] = False
                if not gap_steps[a:b].all():  # more than the rows' own gap: this sensor's
                    gap_steps[a:b] = True
                    gaps.append(Gap(a, b, _gap_place(raw, bins, a, b), name))
        if missing.any():
            col[missing] = np.interp(steps_idx[missing], steps_idx[~missing], col[~missing])
            interpolated += int(short.sum())
        if col.max() == col.min():
            if spec.sensors is None:  # a tag that never moved (a pump's "on" flag): not evidence
                constant.append(name)
                continue
            raise DataError(
                f"{path}, column {name!r}: constant value {col[0]:g} on every row; a constant "
                f"sensor cannot be scaled — leave it out (data.sensors or data.exclude)"
            )
        columns.append(col)
    sensors = [n for n in sensors if n not in constant]
    if not sensors:
        raise DataError(
            f"{path}: every numeric column is constant ({constant}); nothing to learn from"
        )
    values = np.stack(columns, axis=1)
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
        text_cells={
            n: (c.texts, *c.first_text)
            for n in sensors
            if (c := raw.columns[n]).texts and c.first_text is not None
        },
        ignored_columns=tuple(ignored),
        constant_columns=tuple(constant),
        timestamp_column=raw.timestamp_column,
        label_column=raw.label_column,
        guessed_columns=raw.guessed,
        separator=raw.separator,
        decimal=raw.decimal,
        time_format=raw.time_format,
        time_format_alike=raw.time_format_alike,
        gap_steps=gap_steps if gaps else None,
        gaps=tuple(sorted(gaps, key=lambda g: (g.start, g.column or ""))),
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
