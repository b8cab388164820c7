"""Loading historian CSVs: any column layout, clear errors, resampling, chronological split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, DataSpec, chronological_split, load_csv


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rows(n: int, start: int = 0, *, label_at: tuple[int, ...] = ()) -> str:
    """``n`` rows of unix-second data with two moving sensors and a label."""
    out = ["time,a,b,label"]
    for i in range(start, start + n):
        out.append(f"{1700000000 + i},{i * 1.5},{10 - i},{int(i in label_at)}")
    return "\n".join(out) + "\n"


UNIX = DataSpec(timestamp_column="time")


def error_of(path: Path, spec: DataSpec) -> str:
    with pytest.raises(DataError) as info:
        load_csv(path, spec)
    return str(info.value)


# --- reading ---------------------------------------------------------------------------------


def test_simulator_style_csv_takes_numeric_columns_and_skips_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,temp,flow,label,fault_kind\n"
        "2026-01-01T00:00:00.000Z,500.5,300,0,\n"
        "2026-01-01T00:00:01.000Z,501.0,301,1,spike\n"
        "2026-01-01T00:00:02.000Z,502.5,299,1,spike\n"
        "2026-01-01T00:00:03.000Z,503.0,298,0,\n",
    )
    data = load_csv(path, DataSpec())
    assert data.sensors == ("temp", "flow")
    assert data.ignored_columns == ("fault_kind",)
    np.testing.assert_array_equal(data.values[:, 0], [500.5, 501.0, 502.5, 503.0])
    np.testing.assert_array_equal(data.labels, [0, 1, 1, 0])
    assert data.labels is not None and data.labels.dtype == np.int8
    assert data.timestamps[0] == 1767225600.0  # 2026-01-01T00:00:00Z
    np.testing.assert_array_equal(np.diff(data.timestamps), [1.0, 1.0, 1.0])
    assert data.step_seconds == 1.0
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.rows_read == 4


def test_foreign_semicolon_csv_with_other_column_names(tmp_path: Path) -> None:
    """SKAB-style export: ';', 'datetime' without a zone, 'anomaly' labels, extra numeric column."""
    path = write(
        tmp_path,
        "datetime;Accelerometer1RMS;Current;Volume Flow RateRMS;anomaly;changepoint\n"
        "2020-03-09 10:14:33;0.0265;1.33;32.0;0.0;0.0\n"
        "2020-03-09 10:14:34;0.0261;1.35;32.5;0.0;0.0\n"
        "2020-03-09 10:14:35;0.0262;1.54;31.0;1.0;1.0\n"
        "2020-03-09 10:14:36;0.0260;1.33;32.0;1.0;0.0\n",
    )
    spec = DataSpec(
        timestamp_column="datetime", separator=";", label_column="anomaly", exclude=("changepoint",)
    )
    data = load_csv(path, spec)
    assert data.sensors == ("Accelerometer1RMS", "Current", "Volume Flow RateRMS")
    np.testing.assert_array_equal(data.labels, [0, 0, 1, 1])
    np.testing.assert_allclose(data.values[:, 1], [1.33, 1.35, 1.54, 1.33])
    assert data.timestamps[0] == 1583748873.0  # naive times are UTC


def test_separator_and_decimal_comma_are_guessed_and_read_like_a_point_file(
    tmp_path: Path,
) -> None:
    """A European export (';' and 0,25) needs no option, and reads exactly like its
    comma-separated twin; a BOM and quoted column names change nothing."""
    lines = [f"2020-03-09 10:14:3{i};0,02{i}5;1.23{i},5;{i % 2},0" for i in range(6)]
    euro = write(tmp_path, "\ufeffdatetime;Accel RMS;Current;anomaly\n" + "\n".join(lines) + "\n")
    points = write(
        tmp_path,
        '"datetime","Accel RMS","Current","anomaly"\n'
        + "\n".join(f"2020-03-09 10:14:3{i},0.02{i}5,123{i}.5,{i % 2}.0" for i in range(6))
        + "\n",
        name="points.csv",
    )
    data, twin = load_csv(euro, DataSpec()), load_csv(points, DataSpec())
    assert (data.separator, data.decimal) == (";", ",")
    assert (twin.separator, twin.decimal) == (",", ".")
    assert data.sensors == twin.sensors == ("Accel RMS", "Current")
    assert data.label_column == "anomaly"  # "0,0" and "1,0" are labels once read
    np.testing.assert_array_equal(data.values, twin.values)
    np.testing.assert_array_equal(data.labels, twin.labels)
    np.testing.assert_array_equal(data.timestamps, twin.timestamps)
    np.testing.assert_allclose(data.values[:, 1], [1230.5 + i for i in range(6)])
    # named, the options win: this file read with decimal points has no numeric sensor
    assert "no numeric sensor columns" in error_of(euro, DataSpec(decimal="."))


def test_export_time_layouts_read_like_iso_and_the_column_tells_day_from_month(
    tmp_path: Path,
) -> None:
    """PI/Excel-style times (month first, AM/PM, across midnight) and German ones (day first,
    dots) read to the same instants as ISO 8601; the first rows alone could not tell."""
    from datetime import UTC, datetime, timedelta

    start = datetime(2020, 3, 9, 23, 50, tzinfo=UTC)
    times = [start + timedelta(seconds=30 * i) for i in range(40)]  # 23:50 .. 00:09:30
    body = [f"{i * 1.5},{10 - i % 7}" for i in range(40)]
    iso = write(
        tmp_path,
        "time,a,b\n"
        + "".join(f"{t:%Y-%m-%dT%H:%M:%S}Z,{b}\n" for t, b in zip(times, body, strict=True)),
        name="iso.csv",
    )
    us = write(
        tmp_path,
        "Timestamp,a,b\n"
        + "".join(f"{t:%m/%d/%Y %I:%M:%S %p},{b}\n" for t, b in zip(times, body, strict=True)),
        name="us.csv",
    )
    de = write(
        tmp_path,
        "Zeit;a;b\n"
        + "".join(
            f"{t:%d.%m.%Y %H:%M};{b.replace(',', ';')}\n"
            for t, b in zip(times[::2], body[::2], strict=True)
        ),
        name="de.csv",
    )
    ref = load_csv(iso, DataSpec())
    got = load_csv(us, DataSpec())
    assert (got.timestamp_column, got.time_format) == ("Timestamp", "%m/%d/%Y %I:%M:%S %p")
    assert got.time_format_alike == ()  # midnight told month first from day first
    np.testing.assert_array_equal(got.timestamps, ref.timestamps)
    np.testing.assert_array_equal(got.values, ref.values)
    german = load_csv(de, DataSpec())
    assert german.time_format == "%d.%m.%Y %H:%M" and german.timestamps[0] == ref.timestamps[0]
    # named, the layout wins; one it cannot read is an error naming the line
    assert load_csv(us, DataSpec(time_format="%m/%d/%Y %I:%M:%S %p")).time_format_alike == ()
    msg = error_of(us, DataSpec(time_format="%d/%m/%Y %H:%M:%S"))
    assert "line 2" in msg and "'%d/%m/%Y %H:%M:%S'" in msg


def test_explicit_sensor_list_sets_order_and_unlabelled_data_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, rows(5))
    data = load_csv(path, DataSpec(timestamp_column="time", sensors=("b", "a"), label_column=None))
    assert data.sensors == ("b", "a")
    assert data.labels is None
    np.testing.assert_array_equal(data.values[:, 0], [10, 9, 8, 7, 6])


def test_iso_timestamps_with_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,x\n2026-01-01T01:00:00+01:00,1\n2026-01-01T00:00:01Z,2\n2026-01-01T00:00:02Z,3\n",
    )
    data = load_csv(path, DataSpec(label_column=None))
    np.testing.assert_array_equal(data.timestamps - data.timestamps[0], [0.0, 1.0, 2.0])


# --- errors: each names the file, the column and the line -----------------------------------


def test_missing_timestamp_column(tmp_path: Path) -> None:
    path = write(tmp_path, rows(3))
    msg = error_of(path, DataSpec(timestamp_column="ts"))
    assert str(path) in msg and "no timestamp column 'ts'" in msg and "'time'" in msg


def test_missing_sensor_columns(tmp_path: Path) -> None:
    path = write(tmp_path, rows(3))
    msg = error_of(path, DataSpec(timestamp_column="time", sensors=("a", "x", "y")))
    assert str(path) in msg and "sensor columns ['x', 'y'] not found" in msg


def test_missing_label_column_suggests_unlabelled_mode(tmp_path: Path) -> None:
    path = write(tmp_path, rows(3))
    msg = error_of(path, DataSpec(timestamp_column="time", label_column="anomaly"))
    assert "no label column 'anomaly'" in msg and "--label-column none" in msg


def test_unparseable_timestamp_names_the_line(tmp_path: Path) -> None:
    text = rows(4).replace("1700000002,", "yesterday,")
    msg = error_of(write(tmp_path, text), UNIX)
    assert "line 4" in msg and "column 'time'" in msg and "'yesterday'" in msg
    assert "ISO 8601 or Unix seconds" in msg


def test_duplicate_timestamp(tmp_path: Path) -> None:
    text = rows(4).replace("1700000002,", "1700000001,")
    msg = error_of(write(tmp_path, text), UNIX)
    assert "line 4" in msg and "duplicate timestamp '1700000001'" in msg
    assert "same as line 3" in msg


def test_time_going_backwards(tmp_path: Path) -> None:
    text = rows(4).replace("1700000002,", "1699999999,")
    msg = error_of(write(tmp_path, text), UNIX)
    assert "line 4" in msg and "earlier than line 3" in msg and "chronological" in msg


def test_a_historians_status_text_in_a_sensor_column_is_a_missing_reading(tmp_path: Path) -> None:
    """PI writes "Bad Input" or "I/O Timeout" where a reading failed: one such cell must not
    refuse a month of data; it is counted, named, and filled like an empty cell."""
    lines = rows(8).splitlines()
    lines[3] = "1700000002,Bad Input,8,0"  # line 4 of the file
    lines[6] = "1700000005,I/O Timeout,5,0"
    data = load_csv(write(tmp_path, "\n".join(lines) + "\n"), UNIX)
    assert data.sensors == ("a", "b")
    assert data.text_cells == {"a": (2, 4, "Bad Input")}
    assert data.interpolated_cells == 2  # 1 s gaps, as an empty cell would be
    np.testing.assert_allclose(data.values[:, 0], [i * 1.5 for i in range(8)])
    # a named sensor that is mostly text is refused, naming the first text
    text = "\n".join(["time,a,b", *(f"{1700000000 + i},RUN,{i}" for i in range(4))]) + "\n"
    msg = error_of(
        write(tmp_path, text, "t.csv"), DataSpec(timestamp_column="time", sensors=("a", "b"))
    )
    assert "column 'a': 4 of 4 values are not numbers (the first: 'RUN', line 2)" in msg


def test_wrong_number_of_fields(tmp_path: Path) -> None:
    lines = rows(5).splitlines()
    lines[2] = "1700000001,1.5,9"
    msg = error_of(write(tmp_path, "\n".join(lines) + "\n"), UNIX)
    assert "line 3" in msg and "3 fields, the header has 4" in msg


def test_bad_label(tmp_path: Path) -> None:
    text = rows(4).replace("1700000002,3.0,8,0", "1700000002,3.0,8,2")
    msg = error_of(write(tmp_path, text), UNIX)
    assert "line 4" in msg and "column 'label'" in msg and "not 0 or 1" in msg


def test_a_named_constant_sensor_is_refused_an_unnamed_one_left_out(tmp_path: Path) -> None:
    text = "time,a,c,label\n" + "".join(f"{1700000000 + i},{i},7.5,0\n" for i in range(5))
    path = write(tmp_path, text)
    msg = error_of(path, DataSpec(timestamp_column="time", sensors=("a", "c")))
    assert "column 'c'" in msg and "constant value 7.5" in msg and "cannot be scaled" in msg
    data = load_csv(path, UNIX)  # every numeric column: a tag that never moved is no sensor
    assert data.sensors == ("a",) and data.constant_columns == ("c",)
    assert data.values.shape == (5, 1)
    only = "time,c,d\n" + "".join(f"{1700000000 + i},7.5,1\n" for i in range(5))
    msg = error_of(write(tmp_path, only), UNIX)
    assert "every numeric column is constant" in msg and "'c', 'd'" in msg


def test_missing_file() -> None:
    msg = error_of(Path("/nonexistent/x.csv"), UNIX)
    assert "/nonexistent/x.csv" in msg and "not found" in msg


# --- gaps ------------------------------------------------------------------------------------


def test_short_gap_of_missing_cells_is_interpolated(tmp_path: Path) -> None:
    lines = rows(8).splitlines()
    lines[3] = "1700000002,,8,0"
    lines[4] = "1700000003,NaN,7,0"
    data = load_csv(
        write(tmp_path, "\n".join(lines) + "\n"), UNIX.with_overrides(max_gap_seconds=2)
    )
    np.testing.assert_allclose(data.values[:, 0], np.arange(8) * 1.5)  # linear: exact here
    assert data.interpolated_cells == 2


def test_long_gap_of_one_column_is_marked_not_interpolated(tmp_path: Path) -> None:
    lines = rows(10).splitlines()
    for i in (3, 4, 5):  # file lines 4-6 (steps 2-4)
        lines[i] = f"17000000{i - 1:02d},,{11 - i},0"
    data = load_csv(
        write(tmp_path, "\n".join(lines) + "\n"), UNIX.with_overrides(max_gap_seconds=2)
    )
    assert data.n_steps == 10 and data.interpolated_cells == 0  # not counted as interpolated
    assert data.gap_steps is not None
    np.testing.assert_array_equal(np.flatnonzero(data.gap_steps), [2, 3, 4])
    (gap,) = data.gaps
    assert (gap.start, gap.stop, gap.column) == (2, 5, "a")
    assert gap.place == "between line 3 ('1700000001') and line 7 ('1700000005')"
    np.testing.assert_array_equal(data.real(slice(0, 10)), ~data.gap_steps)
    assert data.segments(slice(0, 10)) == [slice(0, 2), slice(5, 10)]
    assert data.segments(slice(1, 7)) == [slice(1, 2), slice(5, 7)]


def test_window_ends_never_touch_a_long_gap(tmp_path: Path) -> None:
    lines = rows(30).splitlines()
    data = load_csv(write(tmp_path, "\n".join(lines[:11] + lines[17:]) + "\n"), UNIX)
    assert data.n_steps == 30 and data.gap_steps is not None  # steps 10..15 absent (> 5 s)
    ends = data.window_ends(4)
    np.testing.assert_array_equal(ends, [*range(3, 10), *range(19, 30)])
    for t in ends:  # the window t-3..t holds real readings only
        assert not data.gap_steps[t - 3 : t + 1].any()
    np.testing.assert_array_equal(data.window_ends(4, slice(8, 21)), [8, 9, 19, 20])
    whole = load_csv(write(tmp_path, rows(30), "whole.csv"), UNIX)
    assert whole.gap_steps is None and whole.gaps == ()
    np.testing.assert_array_equal(whole.window_ends(4), np.arange(3, 30))


def test_missing_rows_short_gap_interpolated_long_gap_marked(tmp_path: Path) -> None:
    lines = rows(10).splitlines()
    short = lines[:4] + lines[6:]  # steps 3 and 4 absent
    data = load_csv(write(tmp_path, "\n".join(short) + "\n", "short.csv"), UNIX)
    assert data.n_steps == 10
    np.testing.assert_allclose(data.values[:, 1], 10 - np.arange(10))
    long = lines[:3] + lines[9:]  # steps 2..7 absent
    data = load_csv(write(tmp_path, "\n".join(long) + "\n", "long.csv"), UNIX)
    (gap,) = data.gaps
    assert (gap.start, gap.steps, gap.column) == (2, 6, None)
    assert gap.place.startswith("between line 3 ('1700000001') and line 4")
    assert data.interpolated_cells == 0


def test_label_of_a_filled_step_is_anomalous_when_a_neighbour_is(tmp_path: Path) -> None:
    lines = rows(6, label_at=(2,)).splitlines()
    del lines[4]  # step 3 missing; step 2 was anomalous
    data = load_csv(write(tmp_path, "\n".join(lines) + "\n"), UNIX)
    np.testing.assert_array_equal(data.labels, [0, 0, 1, 1, 0, 0])


# --- resampling and step inference -----------------------------------------------------------


def test_resample_takes_the_mean_per_step_and_max_label(tmp_path: Path) -> None:
    text = "time,x,label\n" + "".join(
        f"{100 + 0.5 * i},{v},{lab}\n"
        for i, (v, lab) in enumerate([(1, 0), (3, 0), (5, 1), (7, 0), (9, 0), (11, 0)])
    )
    data = load_csv(write(tmp_path, text), DataSpec(timestamp_column="time", step_seconds=1.0))
    np.testing.assert_array_equal(data.values[:, 0], [2.0, 6.0, 10.0])
    np.testing.assert_array_equal(data.labels, [0, 1, 0])
    np.testing.assert_array_equal(data.timestamps, [100.0, 101.0, 102.0])


def test_step_is_inferred_from_the_median_spacing(tmp_path: Path) -> None:
    text = "time,x\n" + "".join(f"{10 * i},{i % 3}\n" for i in range(6))
    data = load_csv(write(tmp_path, text), DataSpec(timestamp_column="time", label_column=None))
    assert data.step_seconds == 10.0 and data.n_steps == 6


# --- split -----------------------------------------------------------------------------------


def test_chronological_split_is_ordered_contiguous_and_complete() -> None:
    s = chronological_split(1000, 0.2)
    assert (s.fit, s.test) == (slice(0, 800), slice(800, 1000))
    assert s.sizes() == {"fit": 800, "test": 200}
    assert chronological_split(400, 0.0).sizes() == {"fit": 400, "test": 0}


def test_split_parts_of_a_dataset_keep_time_order(tmp_path: Path) -> None:
    data = load_csv(write(tmp_path, rows(20, label_at=(15,))), UNIX)
    s = chronological_split(data.n_steps, 0.25)
    parts = [data.part(p) for p in (s.fit, s.test)]
    assert parts[0].timestamps[-1] < parts[1].timestamps[0]
    assert sum(p.n_steps for p in parts) == 20
    assert parts[1].labels is not None and parts[1].labels.sum() == 1


def test_split_with_an_impossible_test_fraction_is_refused() -> None:
    for bad in (-0.1, 1.0):
        with pytest.raises(DataError, match="test fraction"):
            chronological_split(100, bad)


# --- columns nobody named ------------------------------------------------------------------


def test_the_time_and_label_columns_are_guessed_when_not_named(tmp_path: Path) -> None:
    iso = "2026-01-01T00:00:{:02d}Z"
    plain = "time,load_mw,valve\n" + "".join(
        f"{iso.format(i)},{400 + i},{i % 3}\n" for i in range(6)
    )
    data = load_csv(write(tmp_path, plain), DataSpec())
    assert (data.timestamp_column, data.label_column) == ("time", None)
    assert data.guessed_columns == ("timestamp", "label") and data.labels is None
    assert data.sensors == ("load_mw", "valve") and data.timestamps[1] - data.timestamps[0] == 1
    skab_like = "datetime;a;anomaly\n" + "".join(
        f"2020-03-09 10:00:{i:02d};{i * 0.5};{int(i > 3)}\n" for i in range(6)
    )
    data = load_csv(write(tmp_path, skab_like), DataSpec(separator=";"))
    assert (data.timestamp_column, data.label_column, data.sensors) == (
        "datetime",
        "anomaly",
        ("a",),
    )
    assert data.labels is not None and data.labels.tolist() == [0, 0, 0, 0, 1, 1]
    # an explicit name wins over the guess, and "none" means unlabelled
    data = load_csv(write(tmp_path, skab_like), DataSpec(separator=";", label_column=None))
    assert data.sensors == ("a", "anomaly") and data.guessed_columns == ("timestamp",)


def test_no_guess_is_made_between_two_time_columns(tmp_path: Path) -> None:
    text = "start,end,a\n" + "".join(
        f"2026-01-01T00:00:{i:02d},2026-01-01T00:01:{i:02d},{i}\n" for i in range(4)
    )
    msg = error_of(write(tmp_path, text), DataSpec())
    assert "which column is the time?" in msg and "['start', 'end']" in msg
    assert "--timestamp-column" in msg
    numbers = "a,b\n1,2\n3,4\n"
    assert "no 'timestamp' column, and none" in error_of(write(tmp_path, numbers), DataSpec())
    unix = "epoch_s,a\n" + "".join(f"{1700000000 + i},{i}\n" for i in range(4))
    assert load_csv(write(tmp_path, unix), DataSpec()).timestamp_column == "epoch_s"


def test_lines_read_ahead_for_the_guess_keep_their_numbers(tmp_path: Path) -> None:
    def stamp(i: int) -> str:
        return f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"

    lines = [f"{stamp(i)},{i}" for i in range(80)]
    lines[2] = f"{stamp(2)},oops"  # file line 4, inside the rows read ahead
    data = load_csv(write(tmp_path, "time,a\n" + "\n".join(lines) + "\n"), DataSpec())
    assert data.text_cells == {"a": (1, 4, "oops")}  # reported at its own line
    lines[2] = f"{stamp(2)},2"
    lines[70] = f"{stamp(70)},1,2"  # file line 72, after them
    msg = error_of(write(tmp_path, "time,a\n" + "\n".join(lines) + "\n"), DataSpec())
    assert "line 72" in msg and "3 fields" in msg
