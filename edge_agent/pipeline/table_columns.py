"""Which column of a historian CSV holds the time, and which the labels, when nobody said.

A plant's export names its columns its own way (``time``, ``Timestamp (UTC)``,
``DateTime``…); asking the engineer to look that up before the first ``edge-train train``
helps nobody when the file says it plainly. ``edge-train``, ``edge-agent replay`` and the
console's training page all guess the same way, from the header and the first rows, and an
explicit column name always wins. Pure: the callers read the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .time_formats import sample_layouts

#: A column name or option value that asks for the guess.
AUTO = "auto"
#: Data rows read ahead to guess from.
GUESS_ROWS = 50
#: The column names used without any guessing when a file has them.
DEFAULT_TIMESTAMP = "timestamp"
DEFAULT_LABEL = "label"
#: Column names taken for a 0/1 label column (lower-cased).
LABEL_NAMES = frozenset(
    {"label", "labels", "anomaly", "anomalous", "is_anomaly", "fault", "target", "y"}
)
_TIME_NAME = re.compile(r"(time|date|^ts$|epoch)", re.I)


def is_number(text: str) -> bool:
    """A cell that reads as a number (a Unix time, a sensor value), not a date-time text."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cells(header: Sequence[str], rows: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    """The non-empty cells of every column in the sample."""
    cells: dict[str, list[str]] = {h: [] for h in header}
    for row in rows:
        for h, v in zip(header, row, strict=False):
            if v.strip():
                cells[h].append(v.strip())
    return cells


def timestamp_candidates(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns that look like the time: every sampled cell a date-time text (ISO 8601 or a
    layout of :mod:`edge_agent.pipeline.time_formats`); or, when no column is, numeric columns
    named like a time (Unix seconds)."""
    cells = _cells(header, rows)
    texts = [
        h
        for h in header
        if cells[h] and not any(map(is_number, cells[h])) and sample_layouts(cells[h])
    ]
    if texts:
        return texts
    return [
        h for h in header if _TIME_NAME.search(h) and cells[h] and all(map(is_number, cells[h]))
    ]


def guess_timestamp_column(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str | None:
    """``timestamp`` if the file has it, else the one column that looks like the time; None
    when there is none or several (the caller asks for ``--timestamp-column``)."""
    if DEFAULT_TIMESTAMP in header:
        return DEFAULT_TIMESTAMP
    found = timestamp_candidates(header, rows)
    return found[0] if len(found) == 1 else None


def require_timestamp_column(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """:func:`guess_timestamp_column`, or a ValueError that says why no guess was made and
    how to name the column (the callers prefix the file)."""
    found = guess_timestamp_column(header, rows)
    if found is None:
        candidates = timestamp_candidates(header, rows)
        which = f"several look like times: {candidates}" if candidates else "none"
        raise ValueError(
            f"which column is the time? no 'timestamp' column, and {which} "
            f"(columns: {list(header)}); name it with --timestamp-column"
        )
    return found


def guess_label_column(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str | None:
    """``label`` if the file has it (its cells are then checked as labels), else the first
    column named like one (``anomaly``, ``fault``…) whose sampled cells are all 0 or 1; None
    for an unlabelled file."""
    if DEFAULT_LABEL in header:
        return DEFAULT_LABEL
    cells = _cells(header, rows)
    for h in header:
        if h.strip().lower() in LABEL_NAMES and set(cells[h]) <= {"0", "1", "0.0", "1.0"}:
            return h
    return None
