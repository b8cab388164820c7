"""The time layouts of historian exports: which reads a column, and day or month first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edge_agent.pipeline.table_columns import guess_timestamp_column
from edge_agent.pipeline.time_formats import ISO, choose_layout, parse_time, sample_layouts


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cell", "layout", "expected"),
    [
        ("23/03/2020 10:14:33", "%d/%m/%Y %H:%M:%S", utc(2020, 3, 23, 10, 14, 33)),
        ("3/23/2020 10:14:33 PM", "%m/%d/%Y %I:%M:%S %p", utc(2020, 3, 23, 22, 14, 33)),
        ("23.03.2020 10:14", "%d.%m.%Y %H:%M", utc(2020, 3, 23, 10, 14)),
        ("2020/03/23 10:14:33.250", "%Y/%m/%d %H:%M:%S.%f", utc(2020, 3, 23, 10, 14, 33) + 0.25),
        ("23-Mar-2020 10:14:33", "%d-%b-%Y %H:%M:%S", utc(2020, 3, 23, 10, 14, 33)),
        ("23-Mar-20 10:14:33", "%d-%b-%y %H:%M:%S", utc(2020, 3, 23, 10, 14, 33)),
    ],
)
def test_an_unambiguous_export_layout_is_the_only_one_that_reads_it(
    cell: str, layout: str, expected: float
) -> None:
    assert sample_layouts([cell]) == [layout]
    assert parse_time(cell, layout) == expected


def test_iso_and_unix_seconds_stay_iso_and_text_is_no_time() -> None:
    assert sample_layouts(["2020-03-09 10:14:33", "2020-03-09T10:14:34Z"]) == [ISO]
    assert sample_layouts(["1700000000", "1700000001.5"]) == [ISO]
    assert parse_time("2020-03-09T10:14:34Z", ISO) == utc(2020, 3, 9, 10, 14, 34)
    assert sample_layouts(["RUN", "STOP"]) == sample_layouts(["", " "]) == []
    # every cell must read: one day-first cell rules out month first
    assert sample_layouts(["03/09/2020 10:00:00", "13/09/2020 10:00:00"]) == ["%d/%m/%Y %H:%M:%S"]


def _column(start: datetime, layout: str, n: int, step: timedelta) -> list[str]:
    return [(start + i * step).strftime(layout) for i in range(n)]


def test_the_whole_column_tells_day_first_from_month_first_at_midnight() -> None:
    day_first, month_first = "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S"
    # 3 and 4 September, every 10 minutes across midnight: both read the first 50 rows
    start, step = datetime(2020, 9, 3, 22, 0), timedelta(minutes=10)
    for truth, other in ((day_first, month_first), (month_first, day_first)):
        cells = _column(start, truth, 30, step)
        layouts = sample_layouts(cells[:10])
        assert set(layouts) == {truth, other}  # ten rows before midnight cannot tell
        # read the wrong way, midnight jumps a month: the true layout spans 4 h 50 min
        assert choose_layout(cells, layouts) == (truth, [])


def test_a_file_within_one_day_cannot_tell_and_says_so() -> None:
    cells = _column(datetime(2020, 9, 3, 8, 0), "%m/%d/%Y %H:%M:%S", 20, timedelta(minutes=1))
    layouts = sample_layouts(cells)
    assert choose_layout(cells, layouts) == ("%d/%m/%Y %H:%M:%S", ["%m/%d/%Y %H:%M:%S"])


def test_a_layout_that_cannot_read_every_cell_is_not_chosen() -> None:
    cells = ["03/09/2020 10:00:00", "04/09/2020 10:00:00", "13/09/2020 10:00:00"]
    layouts = ["%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S"]
    assert choose_layout(cells, layouts) == ("%d/%m/%Y %H:%M:%S", [])
    assert choose_layout(["garbage"], layouts) == (layouts[0], [])  # the reader names the cell


def test_a_column_of_export_times_is_found_as_the_time_column() -> None:
    header = ["Timestamp", "Load [MW]", "Status"]
    rows = [["09/03/2020 10:14:33", "401.2", "RUN"], ["09/03/2020 10:14:43", "401.9", "RUN"]]
    assert guess_timestamp_column(header, rows) == "Timestamp"
