"""Replay: a CSV through the live engine code, one JSON line per step, same decisions."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest
from handmade_models import build_model_set, normal_series
from numpy.typing import NDArray

from edge_agent.config import AgentSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alerts import alert_json_schema, rfc3339
from edge_agent.pipeline.engine import Engine
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS
from edge_agent.tools.replay import replay

WINDOW = 20
T0 = 1_714_564_800.0
NAMES = [s.name for s in THERMAL_UNIT_SENSORS]


class Quiet:
    def debug(self, event: str, *args: Any, **kw: Any) -> None: ...

    def info(self, event: str, *args: Any, **kw: Any) -> None: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> None: ...


@pytest.fixture(scope="module")
def model_set(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    return ModelSet.load(build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW))


def settings(**overrides: Any) -> AgentSettings:
    base: dict[str, Any] = {
        "agent_id": "replay-t",
        "units": [{"name": "boiler1", "limits": {"bearing_temperature": {"hi": 72.0}}}],
        "alarm": {"on_delay": 3, "off_delay": 5},
    }
    base.update(overrides)
    return AgentSettings(**base)


def faulty_series(n: int = 150) -> NDArray[np.float64]:
    series = normal_series(n, seed=21)
    series[60:75, 2] += 40.0  # feedwater_flow: +13 sd
    series[100:104, 7] = 73.0  # bearing above its HI limit
    return series


def write_csv(
    path: Path,
    series: NDArray[np.float64],
    *,
    iso: bool = False,
    sep: str = ",",
    blank: set[tuple[int, str]] | None = None,
    extra: bool = False,
) -> Path:
    blank = blank or set()
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(["timestamp", *(["comment"] if extra else []), *NAMES])
        for i, row in enumerate(series):
            ts: Any = rfc3339(T0 + i) if iso else T0 + i
            cells = [
                "" if (i, n) in blank else repr(v) for n, v in zip(NAMES, row.tolist(), strict=True)
            ]
            w.writerow([ts, *(["x"] if extra else []), *cells])
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_one_line_per_step_with_the_same_decisions_as_the_engine(
    model_set: ModelSet, tmp_path: Path
) -> None:
    series = faulty_series()
    csv_path = write_csv(tmp_path / "in.csv", series)
    summary = replay(settings(), model_set, csv_path, tmp_path / "out.jsonl", log=Quiet())
    lines = read_lines(tmp_path / "out.jsonl")
    assert len(lines) == len(series) == summary.rows == summary.steps

    # Drive an engine directly with the same data, the way the live agent would.
    engine = Engine(settings(), model_set, Metrics(), Quiet())
    direct = []
    for i, row in enumerate(series):
        ts = T0 + i
        values = dict(zip(NAMES, row.tolist(), strict=True))
        engine.handle_message(
            "plant/plant1/boiler1/telemetry", orjson.dumps({"ts": ts, "values": values}), ts
        )
        direct.extend(engine.tick(ts).steps)
    assert [line["ts"] for line in lines] == [rfc3339(s.ts) for s in direct]
    assert [line["decision"] for line in lines] == [s.decision for s in direct]
    assert [line["score"] for line in lines] == [s.score for s in direct]
    assert [line["alarms"] for line in lines] == [s.alarms for s in direct]
    assert [[a["alert_id"] for a in line["alerts"]] for line in lines] == [
        [a.alert_id for a in s.alerts] for s in direct
    ]

    # Before the window is full every model is null; afterwards all are there.
    assert lines[0]["models"] == {"iforest": None, "lstm_ae": None}
    assert lines[0]["not_scored"] == "warmup" and lines[0]["score"] is None
    full = lines[WINDOW - 1]
    assert full["scored"] and set(full["models"]) == {"iforest", "lstm_ae"}
    assert set(full["models"]["lstm_ae"]) == {"score", "threshold", "decision"}

    alerts = [(a["kind"], a["state"], i) for i, line in enumerate(lines) for a in line["alerts"]]
    assert ("anomaly", "raised", 62) in alerts  # fault at 60, on_delay 3
    assert ("limit", "raised", 102) in alerts
    assert [k for k, s, _ in alerts if s == "raised"].count("anomaly") >= 1
    for line in lines:
        for alert in line["alerts"]:
            jsonschema.validate(alert, alert_json_schema())
    raised = next(a for line in lines for a in line["alerts"] if a["kind"] == "anomaly")
    assert raised["top_sensors"][0]["sensor"] == "feedwater_flow"
    assert summary.alerts_raised == sum(1 for _, s, _ in alerts if s == "raised")
    assert summary.alerts_cleared == sum(1 for _, s, _ in alerts if s == "cleared")
    assert summary.scored == len(series) - WINDOW + 1
    assert summary.anomalous == sum(1 for line in lines if line["decision"])
    assert summary.unit == "boiler1" and summary.model_set_version == model_set.version
    assert (summary.first_ts, summary.last_ts) == (T0, T0 + len(series) - 1)
    text = summary.describe()
    assert f"replayed {len(series)} rows of unit boiler1" in text
    assert f"{summary.alerts_raised} raised" in text


def test_rfc3339_timestamps_separator_extra_columns_and_missing_cells(
    model_set: ModelSet, tmp_path: Path
) -> None:
    series = normal_series(40, seed=22)
    blank = {(25, "load"), (26, "load")}
    csv_path = write_csv(tmp_path / "in.csv", series, iso=True, sep=";", blank=blank, extra=True)
    out = tmp_path / "sub" / "out.jsonl"
    summary = replay(settings(), model_set, csv_path, out, separator=";", log=Quiet())
    lines = read_lines(out)
    assert len(lines) == 40 and summary.missing_cells == 2
    assert [line["carried"] for line in lines[24:28]] == [[], ["load"], ["load"], []]
    assert lines[25]["how"] == "deadline" and lines[24]["how"] == "complete"
    assert all(line["scored"] for line in lines[WINDOW - 1 :])


def test_a_semicolon_decimal_comma_export_replays_like_its_comma_twin(
    model_set: ModelSet, tmp_path: Path
) -> None:
    """Neither option named: the separator and the decimal mark are guessed as edge-train
    guesses them, so no cell of ``0,25`` is taken for a missing reading."""
    series = faulty_series()
    plain = write_csv(tmp_path / "plain.csv", series, iso=True)
    euro = tmp_path / "euro.csv"
    text = plain.read_text(encoding="utf-8").splitlines()
    euro.write_text(
        "\n".join(
            [text[0].replace(",", ";")]
            + [";".join(c.replace(".", ",") if i else c for i, c in enumerate(line.split(",")))
               for line in text[1:]]
        ) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    assert "0," in euro.read_text(encoding="utf-8")
    a = replay(settings(), model_set, plain, tmp_path / "a.jsonl", log=Quiet())
    b = replay(settings(), model_set, euro, tmp_path / "b.jsonl", log=Quiet())
    assert b.layout is not None and a.layout is not None
    assert (b.layout.separator, b.layout.decimal) == (";", ",")
    assert (a.layout.separator, a.layout.decimal) == (",", ".")
    assert b.missing_cells == a.missing_cells == 0
    assert read_lines(tmp_path / "b.jsonl") == read_lines(tmp_path / "a.jsonl")
    assert b.anomalous == a.anomalous > 0
    assert "fields separated by ';', decimal mark ','" in b.describe()
    assert "fields separated" not in a.describe()


def test_day_first_export_times_replay_like_iso(model_set: ModelSet, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    series = normal_series(40, seed=24)
    iso = write_csv(tmp_path / "iso.csv", series, iso=True)
    lines = iso.read_text(encoding="utf-8").splitlines()
    day_first = tmp_path / "dmy.csv"
    out = [lines[0]]
    for line in lines[1:]:
        ts, rest = line.split(",", 1)
        t = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)
        out.append(f"{t:%d/%m/%Y %H:%M:%S},{rest}")
    day_first.write_text("\n".join(out) + "\n", encoding="utf-8")
    a = replay(settings(), model_set, iso, tmp_path / "a.jsonl", log=Quiet())
    b = replay(settings(), model_set, day_first, tmp_path / "b.jsonl", log=Quiet())
    assert b.layout is not None and b.layout.time_format == "%d/%m/%Y %H:%M:%S"
    # 01/05/2024 all day: 1 May read day first, but 5 January would do as well — it says so
    assert b.layout.alike == ("%m/%d/%Y %H:%M:%S",)
    assert "'%m/%d/%Y %H:%M:%S' read them as well: check the dates" in b.describe()
    assert read_lines(tmp_path / "b.jsonl") == read_lines(tmp_path / "a.jsonl")
    assert (b.first_ts, b.last_ts) == (a.first_ts, a.last_ts)


def test_a_custom_timestamp_column_and_unit(model_set: ModelSet, tmp_path: Path) -> None:
    series = normal_series(5, seed=23)
    path = tmp_path / "in.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", *NAMES])
        for i, row in enumerate(series):
            w.writerow([T0 + i, *row.tolist()])
    s = settings(units=[{"name": "a"}, {"name": "b"}])
    summary = replay(s, model_set, path, tmp_path / "o", timestamp_column="time", unit="b")
    assert summary.unit == "b"
    assert {line["unit"] for line in read_lines(tmp_path / "o")} == {"b"}


def test_the_time_column_is_guessed_as_edge_train_guesses_it(
    model_set: ModelSet, tmp_path: Path
) -> None:
    series = normal_series(5, seed=23)
    path = tmp_path / "in.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*NAMES, "Time (UTC)"])  # not first, not called timestamp: ISO cells
        for i, row in enumerate(series):
            w.writerow([*row.tolist(), rfc3339(T0 + i)])
    replay(settings(), model_set, path, tmp_path / "o")
    assert [line["ts"] for line in read_lines(tmp_path / "o")] == [
        rfc3339(T0 + i) for i in range(5)
    ]
    path.write_text(f"start,end,{','.join(NAMES)}\n" + "2026-01-01T00:00:00Z," * 2
                    + ",".join(["1"] * len(NAMES)) + "\n")  # fmt: skip
    with pytest.raises(ValueError, match=r"which column is the time\? .*\['start', 'end'\]"):
        replay(settings(), model_set, path, tmp_path / "o")


def test_bad_inputs_are_refused_with_a_clear_message(model_set: ModelSet, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("timestamp,load\n1714564800,500\n")
    with pytest.raises(ValueError, match="missing columns"):
        replay(settings(), model_set, path, tmp_path / "o")
    write_csv(path, normal_series(3, seed=1))
    with pytest.raises(ValueError, match="not configured"):
        replay(settings(), model_set, path, tmp_path / "o", unit="other")
    text = path.read_text().splitlines()
    text[2] = "yesterday," + text[2].split(",", 1)[1]
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"in\.csv:3: cannot parse timestamp"):
        replay(settings(), model_set, path, tmp_path / "o")


def test_a_simulator_csv_replays_line_for_line(model_set: ModelSet, tmp_path: Path) -> None:
    from edge_agent.tools.simulator import ThermalUnitSimulator

    result = ThermalUnitSimulator(seed=3).generate(60)
    result.to_csv(tmp_path / "sim.csv")  # ISO timestamps, plus label and fault_kind columns
    summary = replay(settings(), model_set, tmp_path / "sim.csv", tmp_path / "o", log=Quiet())
    lines = read_lines(tmp_path / "o")
    assert summary.rows == summary.steps == len(lines) == 60
    assert summary.rejected == 0 and summary.missing_cells == 0
    assert [line["ts"] for line in lines] == [rfc3339(t) for t in result.timestamps.tolist()]
    assert sum(line["scored"] for line in lines) == 60 - WINDOW + 1


def test_replay_reads_timestamps_like_training(model_set: ModelSet, tmp_path: Path) -> None:
    """A historian export with naive timestamps (``2024-05-01 12:00:00``, taken as UTC by
    ``edge-train``) replays the same as with Unix seconds — one rule for both commands."""
    from datetime import UTC, datetime

    from training.data import DataSpec, load_csv

    series = faulty_series(60)
    outputs = []
    for kind in ("naive", "unix"):
        path = tmp_path / f"{kind}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f, delimiter=";")
            w.writerow(["datetime", *NAMES])
            for i, row in enumerate(series):
                ts = T0 + i
                stamp = (
                    datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
                    if kind == "naive"
                    else f"{ts:.0f}"
                )
                w.writerow([stamp, *row.tolist()])
        out = tmp_path / f"{kind}.jsonl"
        summary = replay(
            settings(), model_set, path, out, timestamp_column="datetime", separator=";",
            log=Quiet(),
        )  # fmt: skip
        assert summary.first_ts == T0
        outputs.append(out.read_bytes())
        # and training reads the same instants from the same file
        data = load_csv(path, DataSpec(timestamp_column="datetime", separator=";",
                                       label_column=None))  # fmt: skip
        assert data.timestamps[0] == T0
    assert outputs[0] == outputs[1]


def test_replay_repeats_what_training_warned_about_the_set(tmp_path: Path) -> None:
    models = build_model_set(tmp_path / "models", window=WINDOW)
    manifest = models / "manifest.json"
    doc = orjson.loads(manifest.read_bytes())
    doc["metrics"]["warnings"] = ["the fit part covers 6.7 min of operation"]
    manifest.write_bytes(orjson.dumps(doc))
    warned = ModelSet.load(models)
    path = write_csv(tmp_path / "in.csv", normal_series(30, seed=24))
    summary = replay(settings(), warned, path, tmp_path / "o")
    assert summary.describe().splitlines()[-1] == (
        "warning from training: the fit part covers 6.7 min of operation"
    )
    plain = replay(settings(), ModelSet.load(build_model_set(tmp_path / "m2", window=WINDOW)),
                   path, tmp_path / "o2")  # fmt: skip
    assert "warning" not in plain.describe()
