"""Timestamps as the agent reads them: on the wire (:func:`parse_timestamp`) and in a file
(:func:`parse_table_timestamp`, for ``edge-train`` and ``edge-agent replay``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def parse_timestamp(raw: float | int | str) -> float | None:
    """Unix seconds from RFC 3339 (with offset) or a number; None if it is neither."""
    if type(raw) is str:
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            try:  # RFC 3339 allows lower-case "t" and "z"; fromisoformat does not
                dt = datetime.fromisoformat(raw.upper())
            except ValueError:
                return None
        if dt.tzinfo is None:  # a local time without offset is ambiguous: refuse it
            return None
        return dt.timestamp()
    if type(raw) is float or type(raw) is int:
        ts = float(raw)
        return ts if math.isfinite(ts) else None
    return None


def parse_table_timestamp(text: str) -> float | None:
    """A timestamp cell of a CSV (historian export): Unix seconds, or ISO 8601 where a time
    without offset is UTC. ``edge-train`` and ``edge-agent replay`` both read files this way
    (on the wire, :func:`parse_timestamp` refuses naive times: a live message has no file
    convention to fall back on)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) else None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
