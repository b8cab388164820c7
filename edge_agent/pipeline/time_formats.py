"""The date-time layout of a historian CSV's time column when it is not ISO 8601 or Unix seconds.

Exports from PI DataLink, Excel or a DCS write ``09/03/2020 10:14:33``, ``3/9/2020 10:14:33
AM``, ``09.03.2020 10:14``, ``2020/03/09 10:14:33.250`` or ``09-Mar-2020 10:14:33``; refusing
them sends the engineer to a spreadsheet before the first ``edge-train train``. Day-first and
month-first read the same digits, and 50 rows of one morning cannot tell them apart, so the
*whole column* decides: of the layouts that read the sample, the one that reads every time in
increasing order over the shortest span (read month-first, a day-first file jumps a month at
every midnight). Where two span alike (a file within one day), the earlier in
:data:`LAYOUTS` — day-first — is taken and the caller says so. A time without offset is UTC,
as for ISO. ``--time-format`` (a ``strptime`` format) names the layout instead. ``edge-train``,
``edge-agent replay`` and the column guess of :mod:`edge_agent.pipeline.table_columns` read
times this way. Pure.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime

from .timestamps import parse_table_timestamp

#: The layout name for ISO 8601 or Unix seconds (:func:`parse_table_timestamp`).
ISO = "iso"
_DATES = (
    "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%b-%Y",
    "%d/%m/%y", "%m/%d/%y", "%d.%m.%y", "%d-%b-%y",
)  # fmt: skip
_TIMES = ("%H:%M:%S.%f", "%H:%M:%S", "%H:%M", "%I:%M:%S.%f %p", "%I:%M:%S %p", "%I:%M %p")
#: Layouts tried besides ISO, day-first before month-first.
LAYOUTS: tuple[str, ...] = tuple(f"{d} {t}" for d in _DATES for t in _TIMES)


def parse_time(text: str, layout: str) -> float | None:
    """Unix seconds of one cell in ``layout`` (:data:`ISO` or a ``strptime`` format; a time
    without offset is UTC); None when it does not read."""
    if layout == ISO:
        return parse_table_timestamp(text)
    try:
        dt = datetime.strptime(text.strip(), layout)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def sample_layouts(cells: Sequence[str]) -> list[str]:
    """The layouts that read every cell of a sample: ``[ISO]`` when ISO 8601 or Unix seconds
    do, else those of :data:`LAYOUTS` that do (in order; none for a column of no times)."""
    texts = [c.strip() for c in cells if c.strip()]
    if not texts:
        return []
    if all(parse_table_timestamp(c) is not None for c in texts):
        return [ISO]
    first = [f for f in LAYOUTS if parse_time(texts[0], f) is not None]
    return [f for f in first if all(parse_time(c, f) is not None for c in texts[1:])]


def choose_layout(cells: Sequence[str], layouts: Sequence[str]) -> tuple[str, list[str]]:
    """Of ``layouts`` (from :func:`sample_layouts`), the one that reads every cell of the
    whole column in increasing order over the shortest span, and any others that read it
    exactly as well (the file cannot tell them apart). Where none reads every cell, the
    first, so that the reader names the first cell it cannot read."""
    if len(layouts) <= 1:
        return (layouts[0] if layouts else ISO), []
    ranked: list[tuple[tuple[bool, float], int, str]] = []
    for order, layout in enumerate(layouts):
        times = [parse_time(c, layout) for c in cells]
        if not times or any(t is None for t in times):
            continue
        ts = [t for t in times if t is not None]
        increasing = all(b > a for a, b in itertools.pairwise(ts))
        ranked.append(((not increasing, max(ts) - min(ts)), order, layout))
    if not ranked:
        return layouts[0], []
    ranked.sort()
    best_key = ranked[0][0]
    alike = [layout for key, _, layout in ranked[1:] if _same(key, best_key)]
    return ranked[0][2], alike


def _same(a: tuple[bool, float], b: tuple[bool, float]) -> bool:
    return a[0] == b[0] and math.isclose(a[1], b[1], rel_tol=0.0, abs_tol=1e-6)
