"""The one-line plain-text ``message`` of an alert, for the person reading it on a panel.

The structured fields say everything a program needs; the message says it the way an
operator would: "Steam temperature 590.0 °C above HIHI 580 °C", "Anomaly on unit2:
steam_pressure, feedwater_flow". Engineering units come from the model manifest.

:func:`alert_message` handles every kind it knows and renders any other kind generically
from the fields it has (sensor of a limit, stale sensors, top sensors), so a new alarm kind
gets a readable message before it gets its own case here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from edge_agent.pipeline.alerts import Alert, LimitBreach, rfc3339

#: ASCII unit spellings (as in manifests and CSV headers) and how they are shown.
_UNIT_SYMBOLS = {"degC": "°C", "degF": "°F", "deg": "°", "pct": "%", "percent": "%"}


def unit_symbol(unit: str) -> str:
    """``degC`` → ``°C``; other units are shown as written."""
    return _UNIT_SYMBOLS.get(unit, unit)


def sensor_title(sensor: str) -> str:
    """``steam_temperature`` → ``Steam temperature``."""
    text = sensor.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _value(v: float) -> str:
    """A measured value: 590.0, 7.15, 0.0123 (enough digits to see it cross a limit)."""
    magnitude = abs(v)
    if magnitude >= 100:
        return f"{v:.1f}"
    if magnitude >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _with_unit(text: str, unit: str) -> str:
    symbol = unit_symbol(unit)
    return f"{text} {symbol}" if symbol else text


def _limit_text(b: LimitBreach, state: str) -> str:
    name = sensor_title(b.sensor)
    value = _with_unit(_value(b.value), b.engineering_unit)
    bound = _with_unit(f"{b.limit:g}", b.engineering_unit)
    high = b.level in ("HI", "HIHI")
    if state == "cleared":
        return f"{name} {value} back {'below' if high else 'above'} {b.level} {bound}"
    return f"{name} {value} {'above' if high else 'below'} {b.level} {bound}"


def _names(items: list[str]) -> str:
    return ", ".join(items)


def _envelope_text(alert: Alert) -> str:
    """ "; steam_pressure 190 outside training range 150–175" for the first excursions."""
    parts = []
    for e in list(alert.outside_envelope)[:3]:
        lo = "-inf" if e.lo is None else f"{e.lo:g}"
        hi = "inf" if e.hi is None else f"{e.hi:g}"
        parts.append(f"{e.sensor} {_value(e.value)} outside training range {lo}–{hi}")
    return "; " + ", ".join(parts) if parts else ""


def alert_message(alert: Alert) -> str:
    """The plain-text message of ``alert`` (any kind, any state)."""
    unit, state = alert.unit, alert.state
    cleared = state == "cleared"
    if alert.kind == "limit" and alert.limit is not None:
        return _limit_text(alert.limit, state)
    if alert.kind == "anomaly":
        if cleared:
            return f"Anomaly on {unit} cleared"
        top = [s.sensor for s in alert.top_sensors]
        text = f"Anomaly on {unit}: {_names(top)}" if top else f"Anomaly on {unit}"
        return text + _envelope_text(alert)
    if alert.kind == "bad_quality" and alert.sensor is not None:
        name = sensor_title(alert.sensor)
        if cleared:
            return f"{name} on {unit} sends valid readings again"
        what = {
            "frozen": "reads frozen (one value for longer than training ever saw)",
            "noisy": "reads noisy (changes step to step far more than in training)",
        }.get(alert.quality or "", "sends impossible readings")
        return f"{name} on {unit} {what} (bad quality)"
    if alert.kind == "sensor_stale":
        if cleared:
            return f"Fresh data again from every sensor on {unit}"
        stale = list(alert.stale_sensors)
        return f"No fresh data on {unit} from {_names(stale)}" if stale else f"No data on {unit}"
    if alert.kind == "flood" and alert.flood is not None:
        f = alert.flood
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(f.by_kind.items()))
        return (
            f"Alarm flood on {unit}: {f.suppressed} alert(s) held back ({kinds}) between "
            f"{rfc3339(f.window_start, 'seconds')} and {rfc3339(f.window_end, 'seconds')}"
        )
    return _generic(alert)


def _generic(alert: Alert) -> str:
    """Any other kind: "<Kind> on <unit> (<what it is about>)", plus "cleared"."""
    what: list[str] = []
    if alert.limit is not None:
        what.append(_limit_text(alert.limit, alert.state))
    elif alert.stale_sensors:
        what.append(_names(list(alert.stale_sensors)))
    elif alert.top_sensors:
        what.append(_names([s.sensor for s in alert.top_sensors]))
    text = f"{sensor_title(str(alert.kind))} on {alert.unit}"
    if what:
        text += f": {what[0]}"
    return f"{text} cleared" if alert.state == "cleared" else text


def with_message(alert: Alert, engineering_units: Mapping[str, str] | None = None) -> Alert:
    """``alert`` with its ``message`` set (and its limit's engineering unit, if known)."""
    if alert.limit is not None and engineering_units and not alert.limit.engineering_unit:
        eng = engineering_units.get(alert.limit.sensor, "")
        alert = replace(alert, limit=replace(alert.limit, engineering_unit=eng))
    return replace(alert, message=alert_message(alert))
