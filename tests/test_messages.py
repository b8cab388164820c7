"""The plain-text alert message: what an operator reads on a panel or a phone."""

from __future__ import annotations

from typing import Any

from edge_agent.pipeline.alerts import (
    Alert,
    EnvelopeExcursion,
    FloodDetail,
    LimitBreach,
    SensorError,
)
from edge_agent.pipeline.messages import alert_message, sensor_title, unit_symbol, with_message

T0 = 1_795_946_400.0


def alert(**kw: Any) -> Alert:
    base: dict[str, Any] = {
        "alert_id": "0" * 32,
        "plant": "p1",
        "unit": "unit2",
        "kind": "anomaly",
        "state": "raised",
        "severity": "high",
        "ts": T0,
        "raised_at": T0,
        "model_set_version": "v1",
        "agent_id": "edge-01",
    }
    base.update(kw)
    return Alert(**base)


def test_limit_message_has_name_value_level_limit_and_engineering_unit() -> None:
    a = alert(kind="limit", limit=LimitBreach("steam_temperature", "HIHI", 580.0, 590.0))
    readable = with_message(a, {"steam_temperature": "degC"})
    assert readable.message == "Steam temperature 590.0 °C above HIHI 580 °C"
    assert readable.limit is not None and readable.limit.engineering_unit == "degC"
    assert readable.to_dict()["message"] == readable.message
    assert readable.to_dict()["limit"]["engineering_unit"] == "degC"


def test_limit_messages_for_low_levels_small_values_and_clears() -> None:
    lo = LimitBreach("condenser_vacuum", "LO", 4.0, 3.25, "kPa")
    assert (
        alert_message(alert(kind="limit", limit=lo)) == "Condenser vacuum 3.25 kPa below LO 4 kPa"
    )
    hi = LimitBreach("turbine_vibration", "HI", 7.1, 6.9, "mm/s")
    cleared = alert(kind="limit", state="cleared", limit=hi)
    assert alert_message(cleared) == "Turbine vibration 6.90 mm/s back below HI 7.1 mm/s"
    unitless = LimitBreach("x", "HI", 0.5, 0.625)
    assert alert_message(alert(kind="limit", limit=unitless)) == "X 0.625 above HI 0.5"


def test_anomaly_message_names_the_top_sensors() -> None:
    top = (SensorError("steam_pressure", 31.2), SensorError("feedwater_flow", 9.0))
    assert (
        alert_message(alert(top_sensors=top)) == "Anomaly on unit2: steam_pressure, feedwater_flow"
    )
    assert alert_message(alert()) == "Anomaly on unit2"
    assert alert_message(alert(state="cleared", top_sensors=top)) == "Anomaly on unit2 cleared"


def test_stale_and_flood_messages() -> None:
    stale = alert(kind="sensor_stale", severity="low", stale_sensors=("load", "steam_pressure"))
    assert alert_message(stale) == "No fresh data on unit2 from load, steam_pressure"
    assert "unit2" in alert_message(alert(kind="sensor_stale", state="cleared"))
    flood = alert(
        kind="flood",
        state="summary",
        flood=FloodDetail(12, {"limit": 10, "anomaly": 2}, T0, T0 + 600),
    )
    assert alert_message(flood) == (
        "Alarm flood on unit2: 12 alert(s) held back (anomaly 2, limit 10) between "
        "2026-11-29T10:00:00Z and 2026-11-29T10:10:00Z"
    )


def test_bad_quality_and_envelope_messages() -> None:
    bad = alert(kind="bad_quality", sensor="steam_pressure")
    assert alert_message(bad) == "Steam pressure on unit2 sends impossible readings (bad quality)"
    assert alert_message(alert(kind="bad_quality", sensor="load", state="cleared")) == (
        "Load on unit2 sends valid readings again"
    )
    unusual = alert(
        top_sensors=(SensorError("steam_temperature", 9.0),),
        outside_envelope=(EnvelopeExcursion("steam_temperature", 600.0, 535.0, 545.0),),
    )
    assert alert_message(unusual) == (
        "Anomaly on unit2: steam_temperature; steam_temperature 600.0 outside training "
        "range 535–545"
    )


def test_an_unknown_kind_gets_a_generic_readable_message() -> None:
    """New alarm kinds read sensibly before they get their own case."""
    bad = alert(kind="quality", stale_sensors=("steam_pressure",))
    assert alert_message(bad) == "Quality on unit2: steam_pressure"
    assert alert_message(alert(kind="quality", state="cleared")) == "Quality on unit2 cleared"
    lim = alert(kind="envelope", limit=LimitBreach("load", "HI", 700.0, 712.0, "MW"))
    assert alert_message(lim) == "Envelope on unit2: Load 712.0 MW above HI 700 MW"


def test_unit_symbols_and_titles() -> None:
    assert (unit_symbol("degC"), unit_symbol("bar"), unit_symbol("")) == ("°C", "bar", "")
    assert sensor_title("flue_gas_temperature") == "Flue gas temperature"
