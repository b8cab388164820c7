"""Alarms: the agents' current alarms with lifecycle actions, the archived history, KPIs.

Actions (acknowledge, shelve, unshelve, out of service, in service) are POSTs to
``/api/alarms/command`` made by the browser with the session's CSRF token; the server puts
the signed-in user's name on the command. The list redraws when an agent's retained alarm
list changes, so an acknowledgement shows as the agent's new state, not a local guess.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from nicegui import ui

from .. import kpi
from ..runtime import Console
from .layout import frame, post_json

_SEVERITIES = ["high", "medium", "low"]


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _signature(console: Console) -> bytes:
    parts = [
        (v.plant, v.unit, v.alarms, (v.alarm_list or {}).get("out_of_service"))
        for v in console.state.sorted_units()
    ]
    return orjson.dumps(parts, default=str)


def register(console: Console) -> None:
    state = console.state

    @ui.page("/alarms")
    def alarms(request: Request) -> None:
        user, token = frame(console, request, "Alarms")

        async def command(plant: str, unit: str, payload: dict[str, Any]) -> None:
            result = await post_json(
                "/api/alarms/command", {"plant": plant, "unit": unit, **payload}, token
            )
            body = result.get("body") or {}
            message = body.get("message") or f"HTTP {result.get('status')}"
            ui.notify(
                f"{payload['command']} {payload.get('alarm') or unit}: {message}",
                type="positive" if body.get("ok") else "warning",
            )

        def ask(plant: str, unit: str, command_name: str, alarm: str | None = None) -> None:
            with ui.dialog() as dialog, ui.card().classes("min-w-96"):
                ui.label(f"{command_name.replace('_', ' ')}: {plant}/{unit} {alarm or ''}")
                comment = ui.input("Comment").props("data-testid=command-comment").classes("w-full")
                duration = one_shot = sensor = None
                if command_name == "shelve":
                    duration = ui.number("Minutes", value=60, min=1).props("data-testid=shelve-min")
                    one_shot = ui.checkbox("Until the alarm next clears (one-shot)")
                if command_name in ("out_of_service", "in_service"):
                    view = state.unit(plant, unit)
                    sensors = sorted(
                        {str(t["sensor"]) for t in view.top_sensors if t.get("sensor")}
                    )
                    sensor = ui.input("Sensor (empty = the whole unit)").classes("w-full")
                    if sensors:
                        sensor.props(f"hint='e.g. {sensors[0]}'")

                async def confirm() -> None:
                    payload: dict[str, Any] = {"command": command_name, "alarm": alarm}
                    payload["comment"] = comment.value or None
                    if duration is not None and duration.value:
                        payload["duration_seconds"] = int(float(duration.value) * 60)
                    if one_shot is not None:
                        payload["one_shot"] = bool(one_shot.value)
                    if sensor is not None and sensor.value:
                        payload["sensor"] = sensor.value.strip()
                    dialog.close()
                    await command(plant, unit, payload)

                with ui.row():
                    ui.button("Send", on_click=confirm).props("data-testid=confirm-command")
                    ui.button("Cancel", on_click=dialog.close).props("flat")
            dialog.open()

        ui.label("Active alarms").classes("text-h6")
        if user is None:
            ui.label("Sign in to acknowledge, shelve or take out of service.").classes(
                "text-grey-7"
            )

        @ui.refreshable
        def active() -> None:
            rows = 0
            for view in state.sorted_units():
                oos = (view.alarm_list or {}).get("out_of_service") or {}
                for a in view.alarms:
                    rows += 1
                    name = str(a.get("alarm"))
                    testid = f"alarm-{view.plant}-{view.unit}-{name}"
                    with (
                        ui.row()
                        .classes("items-center gap-3 w-full border-b py-1")
                        .props(f'data-testid="{testid}" data-state={a.get("state")}')
                    ):
                        ui.label(f"{view.plant}/{view.unit}").classes("w-32 font-bold")
                        ui.label(name).classes("w-56")
                        ui.label(str(a.get("state"))).classes("w-32").props(
                            f'data-testid="{testid}-state"'
                        )
                        ui.label(str(a.get("severity"))).classes("w-16")
                        shelved = a.get("shelved")
                        extra = f" · shelved by {shelved.get('by')}" if shelved else ""
                        extra += " · out of service" if a.get("out_of_service") else ""
                        ui.label(f"{a.get('message') or ''}{extra}").classes("grow text-sm")
                        if user is not None:
                            p, u = view.plant, view.unit
                            if not a.get("acknowledged"):
                                ui.button(
                                    "Acknowledge",
                                    on_click=lambda p=p, u=u, n=name: ask(p, u, "acknowledge", n),
                                ).props(f'dense data-testid="ack-{p}-{u}-{name}"')
                            if shelved:
                                ui.button(
                                    "Unshelve",
                                    on_click=lambda p=p, u=u, n=name: ask(p, u, "unshelve", n),
                                ).props("dense flat")
                            else:
                                ui.button(
                                    "Shelve",
                                    on_click=lambda p=p, u=u, n=name: ask(p, u, "shelve", n),
                                ).props("dense flat")
                if user is not None and view.alarm_list is not None:
                    with ui.row().classes("items-center gap-2 text-sm text-grey-8"):
                        ui.label(f"{view.plant}/{view.unit}:")
                        if oos.get("unit"):
                            ui.label("whole unit out of service").classes("text-negative")
                        elif oos.get("sensors"):
                            sensors = ", ".join(str(x) for x in oos["sensors"])
                            ui.label(f"out of service: {sensors}").classes("text-negative")
                        ui.button(
                            "Out of service…",
                            on_click=lambda p=view.plant, u=view.unit: ask(p, u, "out_of_service"),
                        ).props("dense flat size=sm")
                        ui.button(
                            "In service…",
                            on_click=lambda p=view.plant, u=view.unit: ask(p, u, "in_service"),
                        ).props("dense flat size=sm")
            if rows == 0:
                ui.label("No active alarms.").classes("text-grey-7")

        active()
        seen = {"sig": _signature(console)}

        def maybe_refresh() -> None:
            sig = _signature(console)
            if sig != seen["sig"]:
                seen["sig"] = sig
                active.refresh()

        ui.timer(console.settings.web.refresh_seconds, maybe_refresh)
        _history_and_kpis(console)


def _history_and_kpis(console: Console) -> None:
    units = sorted({v.unit for v in console.state.units.values()})
    ui.separator()
    ui.label("History").classes("text-h6")
    with ui.row().classes("items-end gap-4"):
        unit_filter = ui.select(units, multiple=True, label="Units").classes("w-64")
        unit_filter.props("use-chips clearable")
        severity_filter = ui.select(_SEVERITIES, multiple=True, label="Severity").classes("w-48")
        hours = ui.number("Last hours", value=24, min=0.1).classes("w-32")
        apply = ui.button("Apply").props("data-testid=history-apply")
    columns = [
        {"name": c, "label": label, "field": c, "align": "left", "sortable": True}
        for c, label in (
            ("time", "Time (UTC)"),
            ("plant", "Plant"),
            ("unit", "Unit"),
            ("alarm", "Alarm"),
            ("state", "Transition"),
            ("severity", "Severity"),
            ("message", "Message"),
            ("operator", "Operator"),
            ("comment", "Comment"),
        )
    ]
    table = ui.table(columns=columns, rows=[], row_key="id", pagination=20).classes("w-full")
    table.props("dense data-testid=history")
    ui.separator()
    ui.label("Alarm KPIs (ISA-18.2)").classes("text-h6")
    summary = ui.label().props("data-testid=kpi-summary")
    rate_chart = ui.echart(
        {
            "animation": False,
            "title": {"text": "Alarms per 10 minutes", "textStyle": {"fontSize": 13}},
            "tooltip": {"trigger": "axis"},
            "xAxis": {"type": "time"},
            "yAxis": {"type": "value", "minInterval": 1},
            "series": [
                {
                    "type": "bar",
                    "data": [],
                    "markLine": {
                        "symbol": "none",
                        "label": {"formatter": "flood (>10)"},
                        "lineStyle": {"color": "#d32f2f", "type": "dashed"},
                        "data": [{"yAxis": kpi.FLOOD_THRESHOLD}],
                    },
                }
            ],
        }
    ).classes("w-full h-64")
    top_chart = ui.echart(
        {
            "animation": False,
            "title": {
                "text": "Most frequent alarms (chattering in red)",
                "textStyle": {"fontSize": 13},
            },
            "grid": {"left": 220},
            "xAxis": {"type": "value", "minInterval": 1},
            "yAxis": {"type": "category", "data": [], "inverse": True},
            "series": [{"type": "bar", "data": []}],
        }
    ).classes("w-full h-64")

    async def load() -> None:
        end = time.time()
        start = end - float(hours.value or 24) * 3600
        try:
            rows = await asyncio.to_thread(
                console.archive.events,
                units=unit_filter.value or None,
                severities=severity_filter.value or None,
                since=start,
                limit=5000,
            )
        except Exception as exc:  # the database may be down: say so, keep the page alive
            ui.notify(f"archive not available: {type(exc).__name__}", type="warning")
            return
        table.rows = [{**r, "time": _when(r["ts"])} for r in rows[:1000]]
        table.update()
        s = kpi.summarise(rows, start, end)
        standing = kpi.standing(
            [a for v in console.state.units.values() for a in v.alarms],
            end,
            console.settings.standing_after_seconds,
        )
        summary.text = (
            f"{s.alarms} alarms in {s.hours:.1f} h · {s.per_10_minutes_avg:.2f} per 10 min "
            f"(peak {s.per_10_minutes_peak}) · floods: {s.flood_intervals} intervals "
            f"({s.percent_time_in_flood:.1f} % of the time) · chattering: {len(s.chattering)} · "
            f"standing: {len(standing)}"
        )
        rate_chart.options["series"][0]["data"] = [
            [b * 1000.0, c] for b, c in kpi.alarm_rate(rows, start, end)
        ]
        rate_chart.update()
        chatter = {name for name, _ in s.chattering}
        top_chart.options["yAxis"]["data"] = [name for name, _ in s.top_alarms]
        top_chart.options["series"][0]["data"] = [
            {"value": c, "itemStyle": {"color": "#d32f2f" if name in chatter else "#1565c0"}}
            for name, c in s.top_alarms
        ]
        top_chart.update()

    apply.on_click(load)
    ui.timer(0.1, load, once=True)
