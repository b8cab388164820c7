"""Guessing a CSV's field separator and decimal mark (edge-train, replay and the console)."""

from __future__ import annotations

import pytest

from edge_agent.pipeline.table_format import (
    guess_decimal,
    guess_separator,
    normalised,
    resolve_decimal,
    resolve_separator,
    separator_option,
    to_point,
)

SKAB_HEAD = [
    "datetime;Accelerometer1RMS;Current;anomaly\n",
    "2020-03-09 10:14:33;0,0265878;1,3302;0,0\n",
    "2020-03-09 10:14:34;0,0261697;1,35399;0,0\n",
]


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_the_separator_that_splits_header_and_rows_alike_is_found(sep: str) -> None:
    lines = [sep.join(["time", "a", "b"]), sep.join(["1700000000", "1.5", "2"])]
    assert guess_separator(lines) == sep


def test_a_decimal_comma_file_is_semicolon_separated_not_comma() -> None:
    # ',' splits every data row into more fields than the header: not consistent
    assert guess_separator(SKAB_HEAD) == ";"


def test_commas_inside_quoted_column_names_do_not_make_it_comma_separated() -> None:
    lines = ['"Load, MW";"Temp, C";time\n', "400;540;1700000000\n"]
    assert guess_separator(lines) == ";"


def test_a_header_of_one_column_falls_back_to_comma_for_the_readers_error() -> None:
    assert guess_separator(["justonecolumn\n", "1\n"]) == ","
    assert guess_separator([]) == ","


def test_the_decimal_comma_is_guessed_only_where_it_cannot_be_a_field_separator() -> None:
    rows = [["2020-03-09 10:14:33", "0,0265", "1,33", "32"]]
    assert guess_decimal(rows, ";") == ","
    assert guess_decimal(rows, ",") == "."  # a comma-separated file has decimal points
    assert guess_decimal([["2020-03-09", "0.0265", "32"]], ";") == "."
    # both kinds of number in the sample: no guess of a comma, the reader then names the cell
    assert guess_decimal([["0,5", "0.5"]], ";") == "."
    assert guess_decimal([["32", "spike", ""]], "\t") == "."  # no decimals at all


def test_to_point_rewrites_decimal_comma_numbers_and_nothing_else() -> None:
    assert to_point("0,0265", ",") == "0.0265"
    assert to_point(" -1,5 ", ",") == "-1.5"
    assert to_point("1.234,5", ",") == "1234.5"  # thousands grouped by points
    assert to_point("2,5e-3", ",") == "2.5e-3"
    assert float(to_point("2,5e-3", ",")) == pytest.approx(0.0025)
    for cell in ("0.5", "spike", "2020-03-09 10:14:33,5", "", "1,2,3"):
        assert to_point(cell, ",") == cell
    assert to_point("0,5", ".") == "0,5"  # a point file: as written
    assert normalised([["a", "1,5"], ["2,25"]], ",") == [["a", "1.5"], ["2.25"]]


def test_an_option_given_wins_over_the_guess() -> None:
    assert resolve_separator(";", ["a,b,c\n", "1,2,3\n"]) == ";"
    assert resolve_separator("auto", ["a,b,c\n", "1,2,3\n"]) == ","
    assert resolve_decimal(".", [["0,5"]], ";") == "."
    assert resolve_decimal("auto", [["0,5"]], ";") == ","
    with pytest.raises(ValueError, match="decimal mark"):
        resolve_decimal(";", [], ";")
    assert separator_option("\\t") == separator_option("tab") == "\t"
    assert separator_option(";") == ";"
