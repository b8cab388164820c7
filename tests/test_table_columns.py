"""Guessing a historian CSV's time and label columns (edge_agent/pipeline/table_columns.py):
the one rule edge-train, edge-agent replay and the console's training page share."""

from __future__ import annotations

import pytest

from edge_agent.pipeline.table_columns import (
    guess_label_column,
    guess_timestamp_column,
    require_timestamp_column,
    timestamp_candidates,
)

ISO = [["2026-01-01T00:00:00Z", "1.5", "0"], ["2026-01-01T00:00:10Z", "1.6", "1"]]


def test_the_default_names_win_without_looking_at_cells() -> None:
    rows = [["x", "y", "2"]]
    assert guess_timestamp_column(["a", "timestamp", "label"], rows) == "timestamp"
    assert guess_label_column(["a", "timestamp", "label"], rows) == "label"  # checked later


def test_one_column_of_date_times_is_the_time() -> None:
    assert guess_timestamp_column(["Time (UTC)", "load", "fault"], ISO) == "Time (UTC)"
    spaced = [["2020-03-09 10:14:33", "0.2"], ["", "0.3"]]  # SKAB's format; a blank cell
    assert guess_timestamp_column(["datetime", "Current"], spaced) == "datetime"


def test_numbers_are_never_date_times_unless_named_like_a_time() -> None:
    rows = [["1700000000", "20260101", "3"]]
    assert timestamp_candidates(["epoch", "batch", "a"], rows) == ["epoch"]
    assert guess_timestamp_column(["id", "batch", "a"], rows) is None


def test_two_time_columns_are_not_guessed_between() -> None:
    rows = [["2026-01-01T00:00:00", "2026-01-01T00:05:00", "1"]]
    header = ["start", "end", "a"]
    assert timestamp_candidates(header, rows) == ["start", "end"]
    assert guess_timestamp_column(header, rows) is None
    with pytest.raises(ValueError, match=r"several look like times: \['start', 'end'\]"):
        require_timestamp_column(header, rows)
    assert require_timestamp_column(["t", "timestamp"], rows) == "timestamp"


def test_a_label_is_named_like_one_and_holds_only_zeros_and_ones() -> None:
    assert guess_label_column(["ts", "load", "fault"], ISO) == "fault"
    assert guess_label_column(["ts", "load", "Anomaly"], ISO) == "Anomaly"
    assert guess_label_column(["ts", "load", "level"], ISO) is None  # no such name
    counts = [["t", "1", "3"], ["t", "2", "0"]]
    assert guess_label_column(["ts", "load", "fault"], counts) is None  # a fault counter
