"""How a historian CSV writes its cells: the field separator and the decimal mark.

European exports (SKAB's among them) separate fields with ``;`` and often write ``0,25`` for
0.25; a tab or ``|`` is not rare either. A file that says so plainly in its first lines should
not need an option before the first ``edge-train train`` — and a replay that read every
``0,25`` as "no reading" would score a plant of missing cells. ``edge-train``, ``edge-agent
replay`` and the console's training page guess the same way, from the header and the first
rows; an explicit ``--separator`` / ``--decimal`` always wins. Pure: the callers read the file.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence

from .table_columns import AUTO, require_timestamp_column

#: Field separators guessed among, in order of preference on a tie.
SEPARATORS: tuple[str, ...] = (",", ";", "\t", "|")
DECIMAL_MARKS: tuple[str, ...] = (".", ",")
#: A number written with a decimal comma (``-0,25``, ``1.234,5``, ``2,5e-3``).
_COMMA_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+(?:[eE][+-]?\d+)?")
#: A number written with a decimal point (``0.25``, ``.5``, ``1.5e3``).
_POINT_NUMBER = re.compile(r"[+-]?\d*\.\d+(?:[eE][+-]?\d+)?")


def guess_separator(lines: Sequence[str]) -> str:
    """The separator that splits the header (``lines[0]``) into the most columns, at least 2,
    preferring one that splits every sampled row into as many; ``,`` when none splits the
    header (the reader then says the header has one column and names the option)."""
    best, best_key = ",", (False, 1)
    for sep in SEPARATORS:
        rows = [r for r in csv.reader(lines, delimiter=sep) if r]
        if not rows or len(rows[0]) < 2:
            continue
        n = len(rows[0])
        key = (all(len(r) == n for r in rows[1:]), n)
        if key > best_key:
            best, best_key = sep, key
    return best


def guess_decimal(rows: Iterable[Sequence[str]], separator: str) -> str:
    """``,`` when the fields are not separated by commas, some sampled cell is a number with a
    decimal comma and none is one with a decimal point; else ``.``."""
    if separator == ",":
        return "."
    comma = point = False
    for row in rows:
        for cell in row:
            text = cell.strip()
            if _COMMA_NUMBER.fullmatch(text):
                comma = True
            elif _POINT_NUMBER.fullmatch(text):
                point = True
    return "," if comma and not point else "."


def to_point(cell: str, decimal: str) -> str:
    """The cell with a decimal point where the file writes a decimal comma (``1.234,5`` →
    ``1234.5``); any other cell unchanged, so it parses (or fails) as it would have."""
    if decimal == "," and "," in cell:
        text = cell.strip()
        if _COMMA_NUMBER.fullmatch(text):
            return text.replace(".", "").replace(",", ".")
    return cell


def separator_option(text: str) -> str:
    """A ``--separator`` as typed: ``\\t`` and ``tab`` mean a tab (hard to type in a shell)."""
    return "\t" if text in ("\\t", "tab", "TAB") else text


def resolve_separator(option: str, lines: Sequence[str]) -> str:
    """The option as given, or the guess from ``lines`` when it is :data:`AUTO`."""
    return guess_separator(lines) if option == AUTO else option


def resolve_decimal(option: str, rows: Iterable[Sequence[str]], separator: str) -> str:
    """The option as given (``.`` or ``,``), or the guess from ``rows`` when it is :data:`AUTO`."""
    if option == AUTO:
        return guess_decimal(rows, separator)
    if option not in DECIMAL_MARKS:
        raise ValueError(f"decimal mark must be '.', ',' or {AUTO!r}, got {option!r}")
    return option


def read_head(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    separator: str,
    decimal: str,
    timestamp_column: str,
) -> tuple[str, list[list[str]], str]:
    """From a file's header and first rows (split with ``separator``): the decimal mark, the
    rows with decimal points (for every further guess) and the time column — each as given,
    or guessed when :data:`AUTO`. A ValueError says why no time column was guessed."""
    decimal = resolve_decimal(decimal, rows, separator)
    sample = normalised(rows, decimal) if decimal == "," else [list(r) for r in rows]
    if timestamp_column == AUTO:
        timestamp_column = require_timestamp_column(header, sample)
    return decimal, sample, timestamp_column


def normalised(rows: Iterable[Sequence[str]], decimal: str) -> list[list[str]]:
    """``rows`` with every decimal-comma number written with a point (for the column guesses
    of :mod:`edge_agent.pipeline.table_columns`, which read numbers the usual way)."""
    return [[to_point(c, decimal) for c in row] for row in rows]
