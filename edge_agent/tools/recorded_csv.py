"""Reading a recorded CSV for ``edge-agent replay``, the way ``edge-train`` reads its data.

The file's layout — field separator, decimal mark, time column and time layout — is resolved
once, from its head (and, where day and month could be swapped, from its whole time column),
by the same pure guesses training uses (:mod:`edge_agent.pipeline.table_format`,
:mod:`edge_agent.pipeline.table_columns`, :mod:`edge_agent.pipeline.time_formats`); then the
rows stream. An empty or non-numeric sensor cell is a missing reading (counted), never an
error: the engine carries the last value forward or marks the step stale, as it would live.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.pipeline.table_columns import AUTO, GUESS_ROWS
from edge_agent.pipeline.table_format import (
    read_head,
    resolve_separator,
    separator_option,
    to_point,
)
from edge_agent.pipeline.time_formats import choose_layout, parse_time, sample_layouts


def add_layout_options(group: Any, default: str | None) -> None:
    """``--separator``, ``--time-format`` and ``--decimal`` (``edge-train`` and ``edge-agent
    replay`` read files alike, so they take the same options; ``default`` None leaves the
    choice to a config file, whose default is ``auto``)."""
    group.add_argument(
        "--separator",
        type=separator_option,
        default=default,
        help="field separator, e.g. ';' or '\\t' (default auto: the one of , ; tab | that "
        "splits the header and the first rows alike)",
    )
    group.add_argument(
        "--time-format",
        default=default,
        help="layout of the times: 'iso' (ISO 8601 or Unix seconds) or a strptime format such "
        "as '%%d/%%m/%%Y %%H:%%M:%%S' (default auto: ISO, else the common export layout that "
        "reads the whole column in order over the shortest span)",
    )
    group.add_argument(
        "--decimal",
        choices=("auto", ".", ","),
        default=default,
        help="decimal mark (default auto: ',' when the fields are not comma-separated and "
        "the first rows write numbers like 0,25)",
    )


@dataclass(frozen=True)
class TableLayout:
    """How one recorded CSV is read (given or guessed)."""

    separator: str
    decimal: str
    timestamp_column: str
    #: ``iso`` or a strptime format; ``alike``: others that read the time column as well.
    time_format: str
    alike: tuple[str, ...] = ()


def _cell(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _time_cells(path: Path, separator: str, column: int) -> list[str]:
    """Every non-empty row's cell of one column (the whole-column pass of the time layout)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=separator)
        next(reader, None)
        return [r[column] for r in reader if len(r) > column and any(c.strip() for c in r)]


def resolve_layout(
    path: Path, separator: str, decimal: str, timestamp_column: str, time_format: str
) -> TableLayout:
    """The file's layout: every option as given, or (``auto``) guessed as edge-train does."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        head = list(itertools.islice(f, GUESS_ROWS + 1))
    if not head:
        raise ValueError(f"{path}: empty file")
    separator = resolve_separator(separator, head)
    parsed = list(csv.reader(head, delimiter=separator))
    header = [h.strip() for h in parsed[0]]
    rows = [r for r in parsed[1:] if r]
    try:
        decimal, sample, timestamp_column = read_head(
            header, rows, separator, decimal, timestamp_column
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if timestamp_column not in header:
        raise ValueError(f"{path}: missing columns {[timestamp_column]} (has {header})")
    ts = header.index(timestamp_column)
    alike: list[str] = []
    if time_format == AUTO:
        layouts = sample_layouts([r[ts] for r in sample if len(r) > ts])
        time_format, alike = choose_layout(
            _time_cells(path, separator, ts) if len(layouts) > 1 else [], layouts
        )
    return TableLayout(separator, decimal, timestamp_column, time_format, tuple(alike))


def rows(
    path: Path, layout: TableLayout, sensors: list[str]
) -> Iterator[tuple[int, float, dict[str, float], int]]:
    """(line number, ts, values present, missing cells) per data row."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=layout.separator)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in (layout.timestamp_column, *sensors) if c not in header]
        if missing:
            raise ValueError(f"{path}: missing columns {missing} (has {header})")
        ts_col = header.index(layout.timestamp_column)
        cols = [(name, header.index(name)) for name in sensors]
        comma = layout.decimal == ","
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if comma:
                row = [to_point(c, ",") for c in row]
            if len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            ts = parse_time(row[ts_col], layout.time_format)
            if ts is None:
                raise ValueError(
                    f"{path}:{reader.line_num}: cannot parse timestamp {row[ts_col]!r} "
                    f"as {layout.time_format!r} (--time-format names the layout)"
                )
            values: dict[str, float] = {}
            for name, i in cols:
                v = _cell(row[i])
                if v is not None:
                    values[name] = v
            yield reader.line_num, ts, values, len(cols) - len(values)
