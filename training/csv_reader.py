"""Reading a historian CSV's cells: what to read (:class:`DataSpec`), and the raw columns.

Split from :mod:`training.data` (which turns the raw columns into a regular series): this
module only parses — times that are all ISO 8601 or all Unix seconds, numbers, labels,
missing-cell tokens — and refuses what it cannot parse with a :class:`DataError` naming the
file, the column and the line.
"""

from __future__ import annotations

import csv
import itertools
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipeline.table_columns import (
    AUTO,
    GUESS_ROWS,
    guess_label_column,
)
from edge_agent.pipeline.table_format import (
    read_head,
    resolve_separator,
    to_point,
)
from edge_agent.pipeline.time_formats import ISO, choose_layout, parse_time, sample_layouts
from edge_agent.pipeline.timestamps import parse_table_timestamp

#: Cell values read as "no reading" rather than as text.
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none"})


class DataError(ValueError):
    """Data that cannot be trained on; the message names the file, column and line."""


@dataclass(frozen=True)
class DataSpec:
    """How to read one historian export.

    ``timestamp_column`` and ``label_column`` ``"auto"`` guess from the header and the first
    rows (:mod:`edge_agent.pipeline.table_columns`: ``timestamp``/``label`` when present,
    else the one time-like column and a 0/1 column named like a label; no such column means
    unlabelled); a name is used as given; ``label_column=None`` is unlabelled.
    ``sensors=None`` takes every numeric column except the timestamp, the label and the
    ``exclude`` columns. ``step_seconds=None`` uses the median spacing of the timestamps.
    Gaps of up to ``max_gap_seconds`` (missing cells or missing rows) are linearly
    interpolated after resampling; longer ones are marked and no window spans them
    (:mod:`training.data`).
    """

    timestamp_column: str = AUTO
    #: One character, or ``auto``: guessed from the head of the file, like the decimal mark
    #: (:mod:`edge_agent.pipeline.table_format`).
    separator: str = AUTO
    decimal: str = AUTO
    #: ``auto``, ``iso`` (ISO 8601 or Unix seconds) or a ``strptime`` format such as
    #: ``%d/%m/%Y %H:%M:%S`` (:mod:`edge_agent.pipeline.time_formats`).
    time_format: str = AUTO
    sensors: tuple[str, ...] | None = None
    label_column: str | None = AUTO
    exclude: tuple[str, ...] = ()
    step_seconds: float | None = None
    max_gap_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.separator != AUTO and len(self.separator) != 1:
            raise DataError(f"separator must be one character or 'auto', got {self.separator!r}")
        if self.decimal not in (AUTO, ".", ","):
            raise DataError(f"decimal must be '.', ',' or 'auto', got {self.decimal!r}")
        if self.step_seconds is not None and not self.step_seconds > 0:
            raise DataError(f"step_seconds must be positive, got {self.step_seconds}")
        if not self.max_gap_seconds >= 0:
            raise DataError(f"max_gap_seconds must be >= 0, got {self.max_gap_seconds}")
        if self.sensors is not None and len(self.sensors) == 0:
            raise DataError("sensors must name at least one column (or be null for all)")

    def with_overrides(self, **changes: Any) -> DataSpec:
        """A copy with the given fields replaced; ``None`` values leave a field unchanged."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


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
            f"{self.where}, line {line}: cannot parse timestamp {cell!r} (expected {kind}; "
            f"timestamps are ISO 8601 or Unix seconds, or a layout named with --time-format, "
            f"e.g. '%d/%m/%Y %H:%M:%S')"
        )


class _LayoutParser:
    """Parses a timestamp column in one ``strptime`` layout; NaN while the layout is still
    to be chosen from the whole column (``layout`` None)."""

    def __init__(self, where: str, layout: str | None) -> None:
        self.where, self.layout = where, layout

    def __call__(self, cell: str, line: int) -> float:
        if self.layout is None:
            return math.nan
        t = parse_time(cell, self.layout)
        if t is None:
            raise DataError(
                f"{self.where}, line {line}: cannot parse timestamp {cell!r} as "
                f"{self.layout!r} like the rows before it (--time-format names the layout)"
            )
        return t


def _check_order(
    times: NDArray[np.float64], lines: NDArray[np.int64], raw: list[str], path: Path, column: str
) -> None:
    """Rows in strictly increasing time, or the error naming the first that is not."""
    bad = np.flatnonzero(np.diff(times) <= 0)
    if bad.size == 0:
        return
    i = int(bad[0]) + 1
    where = f"{path}, line {lines[i]}, column {column!r}"
    if times[i] == times[i - 1]:
        raise DataError(f"{where}: duplicate timestamp {raw[i]!r} (same as line {lines[i - 1]})")
    raise DataError(
        f"{where}: timestamp {raw[i]!r} is earlier than line {lines[i - 1]} ({raw[i - 1]!r}); "
        f"rows must be in chronological order"
    )


class RawColumn:
    """Values of one candidate sensor column as read, with what was wrong in it.

    A text cell (a historian's ``Bad Input``, ``I/O Timeout``, ``Shutdown``) is a missing
    reading, counted with the first one's line; a column of more text than numbers is no
    sensor (:func:`training.data.load_csv` decides)."""

    __slots__ = ("first_text", "missing", "numbers", "texts", "values")

    def __init__(self) -> None:
        self.values = array("d")
        self.first_text: tuple[int, str] | None = None
        self.missing = 0
        self.numbers = 0
        self.texts = 0

    def add(self, cell: str, line: int) -> None:
        if _is_missing(cell):
            self.values.append(math.nan)
            self.missing += 1
            return
        v = _parse_number(cell)
        if v is None:
            if self.first_text is None:
                self.first_text = (line, cell)
            self.texts += 1
            self.values.append(math.nan)
        else:
            self.numbers += 1
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
class RawTable:
    times: NDArray[np.float64]
    lines: NDArray[np.int64]
    raw_times: list[str]
    columns: dict[str, RawColumn]
    labels: NDArray[np.int8] | None
    header: list[str]
    #: The columns read as the time and the labels (after any guess) and whether guessed.
    timestamp_column: str = ""
    label_column: str | None = None
    guessed: tuple[str, ...] = ()
    #: The field separator and decimal mark read with (after any guess).
    separator: str = ","
    decimal: str = "."
    #: The time layout read with, and any others that read the column exactly as well.
    time_format: str = ISO
    time_format_alike: tuple[str, ...] = ()


def _head(f: Any, path: Path) -> list[str]:
    """The header and the first :data:`GUESS_ROWS` lines as text, the file rewound."""
    lines: list[str] = []
    try:
        while len(lines) <= GUESS_ROWS and (line := f.readline()):
            lines.append(line)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}, line {len(lines) + 1}: not UTF-8 text: {exc}") from None
    f.seek(0)
    return lines


def read_rows(path: Path, spec: DataSpec) -> RawTable:
    try:
        f = path.open("r", encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror}") from None
    with f:
        head = _head(f, path) if AUTO in (spec.separator, spec.decimal) else []
        separator = resolve_separator(spec.separator, head)
        reader = csv.reader(f, delimiter=separator)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: file is empty") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}, line 1: cannot read header: {exc}") from None
        if len(header) < 2:
            raise DataError(
                f"{path}, line 1: header has {len(header)} column ({header!r}); "
                f"is the separator {separator!r} right? (--separator or data.separator)"
            )
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"{path}, line 1: duplicate column names {dupes}")
        index = {name: i for i, name in enumerate(header)}
        ahead: list[list[str]] = []
        ahead_lines: list[int] = []
        deferred: Exception | None = None
        guessed: list[str] = []
        ts_col, label_col = spec.timestamp_column, spec.label_column
        if AUTO in (ts_col, label_col, spec.decimal, spec.time_format):
            try:
                for row in reader:
                    ahead.append(row)
                    ahead_lines.append(reader.line_num)
                    if len(ahead) >= GUESS_ROWS:
                        break
            except (csv.Error, UnicodeDecodeError) as exc:
                deferred = exc  # raised below, after the rows before it, like any other
        try:
            decimal, sample, found = read_head(header, ahead, separator, spec.decimal, ts_col)
        except ValueError as exc:
            raise DataError(f"{path}: {exc} (or data.timestamp_column)") from None
        if ts_col == AUTO:
            ts_col = found
            if ts_col != "timestamp":
                guessed.append("timestamp")
        elif ts_col not in index:
            raise DataError(
                f"{path}: no timestamp column {ts_col!r} (columns: {header}); "
                f"set data.timestamp_column or --timestamp-column"
            )
        if label_col == AUTO:
            taken = {ts_col, *(spec.sensors or ()), *spec.exclude}
            label_col = guess_label_column([h if h not in taken else "" for h in header], sample)
            if label_col != "label":
                guessed.append("label")
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
        cols = {name: RawColumn() for name in candidates}
        col_idx = [(index[name], cols[name]) for name in candidates]
        ts_i = index[ts_col]
        label_i = index[label_col] if label_col is not None else None
        times = array("d")
        lines = array("q")
        raw_times: list[str] = []
        labels = array("b")
        where = f"{path}, column {ts_col!r}"
        layouts = (
            [spec.time_format]
            if spec.time_format != AUTO
            else sample_layouts([r[ts_i] for r in sample if len(r) > ts_i])
        )
        chosen = layouts[0] if len(layouts) == 1 else None  # None: the whole column decides
        read_time: Any = (
            _TimeParser(where) if chosen in (ISO, None) and len(layouts) <= 1
            else _LayoutParser(where, chosen)
        )  # fmt: skip
        n_fields = len(header)
        try:

            def rest() -> Iterator[tuple[int, list[str]]]:
                if deferred is not None:
                    raise deferred
                for row in reader:
                    yield reader.line_num, row

            for line, row in itertools.chain(zip(ahead_lines, ahead, strict=True), rest()):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != n_fields:
                    raise DataError(
                        f"{path}, line {line}: {len(row)} fields, the header has {n_fields}"
                    )
                if decimal == ",":
                    row = [to_point(c, ",") for c in row]
                times.append(read_time(row[ts_i], line))
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
    line_numbers = np.frombuffer(lines, dtype=np.int64).copy()
    alike: list[str] = []
    if chosen is None and len(layouts) > 1:  # day or month first: the whole column decides
        chosen, alike = choose_layout(raw_times, layouts)
        read_time = _LayoutParser(where, chosen)
        times = array(
            "d", (read_time(c, int(n)) for c, n in zip(raw_times, line_numbers, strict=True))
        )
    time_values = np.frombuffer(times, dtype=np.float64).copy()
    _check_order(time_values, line_numbers, raw_times, path, ts_col)
    if len(times) < 2:
        raise DataError(f"{path}: needs at least 2 data rows, found {len(times)}")
    return RawTable(
        times=time_values,
        lines=line_numbers,
        raw_times=raw_times,
        columns=cols,
        labels=np.frombuffer(labels, dtype=np.int8).copy() if label_i is not None else None,
        header=header,
        timestamp_column=ts_col,
        label_column=label_col,
        guessed=tuple(guessed),
        separator=separator,
        decimal=decimal,
        time_format=chosen or ISO,
        time_format_alike=tuple(alike),
    )
