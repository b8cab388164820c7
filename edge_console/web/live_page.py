"""Live: every unit of every agent, its state colour, score against threshold, top sensors.

A timer per page compares the live state's version with what it last drew and touches only
the units whose ``version`` moved, so a message reaches the screen within one refresh
period (0.5 s by default) and 100 idle units cost nothing.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request
from nicegui import ui

from edge_agent.config import SensorLimits

from ..runtime import Console
from ..state import STATE_COLOURS, AgentView, UnitView
from .layout import frame

_STATE_TEXT = {
    "alarm": "ALARM",
    "unacknowledged": "unacknowledged",
    "shelved": "shelved",
    "out_of_service": "out of service",
    "stale": "stale data",
    "normal": "normal",
    "unknown": "no data yet",
}


def _chart_options() -> dict[str, Any]:
    return {
        "animation": False,
        "grid": {"left": 40, "right": 10, "top": 10, "bottom": 24},
        "xAxis": {
            "type": "time",
            "splitNumber": 3,
            "axisLabel": {"fontSize": 10, "hideOverlap": True, "formatter": "{HH}:{mm}:{ss}"},
        },
        "yAxis": {"type": "value", "axisLabel": {"fontSize": 10}},
        "tooltip": {"trigger": "axis"},
        "series": [
            {
                "type": "line",
                "name": "ensemble score",
                "showSymbol": False,
                "data": [],
                "lineStyle": {"width": 1.5},
                "sampling": "lttb",
                "markLine": {
                    "symbol": "none",
                    "silent": True,
                    "label": {"formatter": "threshold", "fontSize": 10, "position": "insideEndTop"},
                    "lineStyle": {"color": "#d32f2f", "type": "dashed"},
                    "data": [{"yAxis": 0}],
                },
            }
        ],
    }


def _trend_options() -> dict[str, Any]:
    options = _chart_options()
    options["yAxis"]["scale"] = True
    series = options["series"][0]
    series["name"] = "value"
    series["markLine"] = {
        "symbol": "none",
        "silent": True,
        "label": {"formatter": "{b}", "fontSize": 10, "position": "insideEndTop"},
        "lineStyle": {"color": "#f57c00", "type": "dashed"},
        "data": [],
    }
    return options


class UnitCard:
    """One unit's card; :meth:`update` redraws it from the live view."""

    def __init__(
        self, view: UnitView, limits: dict[str, SensorLimits], chart_every: float = 2.0
    ) -> None:
        self.version = -1
        self.chart_every = chart_every
        self.chart_due = False
        self.chart_drawn = -1e18
        self.trend_version = -1
        self.limits = limits
        self.agent_text = ""
        testid = f"unit-{view.plant}-{view.unit}"
        with ui.card().classes("w-full").props(f"data-testid={testid}") as self.card:
            with ui.row().classes("items-center justify-between w-full no-wrap"):
                ui.label(f"{view.plant} / {view.unit}").classes("text-lg font-bold")
                self.badge = ui.label("…").classes("px-2 rounded text-white text-sm")
                self.badge.props(f"data-testid={testid}-state")
            with ui.row().classes("items-center gap-4 text-sm"):
                self.agent = ui.label().props(f"data-testid={testid}-agent")
                self.score = ui.label().props(f"data-testid={testid}-score")
            self.top = ui.label().classes("text-sm text-grey-8")
            self.alarms = ui.label().classes("text-sm")
            self.chart = ui.echart(_chart_options()).classes("w-full h-36")
            with (
                ui.expansion("Sensor trends")
                .classes("w-full")
                .props(f"dense data-testid={testid}-trends") as self.trend_box
            ):
                self.sensor = ui.select([], label="Sensor").classes("w-full").props("dense")
                self.trend = ui.echart(_trend_options()).classes("w-full h-36")
            self.sensor.on_value_change(lambda: self._redraw_trend(view))
            self.trend_box.on_value_change(lambda: self._redraw_trend(view))

    def update(self, view: UnitView, agent: AgentView | None) -> None:
        self.update_agent(view, agent)
        self.update_trend(view)
        self.update_chart(view)
        if view.version == self.version:
            return
        self.version = view.version
        state = view.state
        colour = STATE_COLOURS[state]
        self.badge.text = _STATE_TEXT[state]
        self.badge.style(replace=f"background-color:{colour}")
        self.badge.props(f"data-state={state}")
        self.card.props(f"data-state={state}")
        self.card.style(replace=f"border-left: 6px solid {colour}")
        if view.score is None:
            self.score.text = "score: –" + (" (stale)" if view.stale else "")
        else:
            verdict = "above" if view.score > 0 else "below"
            self.score.text = f"score {view.score:+.2f} ({verdict} threshold)"
        top = ", ".join(
            f"{t.get('sensor')} {float(t.get('error', 0.0)):.2g}" for t in view.top_sensors[:3]
        )
        self.top.text = f"top sensors: {top}" if top else ""
        alarms = [f"{a.get('alarm')} [{a.get('state')}]" for a in view.alarms]
        self.alarms.text = "alarms: " + ", ".join(alarms) if alarms else ""
        self.chart_due = True
        self.update_chart(view)

    def update_chart(self, view: UnitView) -> None:
        """Redraw the score chart at most every ``chart_every`` seconds: the text and colour
        follow each message, the curve (hundreds of points per card) need not."""
        now = time.monotonic()
        if not self.chart_due or now - self.chart_drawn < self.chart_every:
            return
        self.chart_due, self.chart_drawn = False, now
        series = self.chart.options["series"][0]
        series["data"] = [[ts * 1000.0, s] for ts, s in view.history]
        self.chart.update()

    def _redraw_trend(self, view: UnitView) -> None:
        self.trend_version = -1
        self.update_trend(view)

    def update_trend(self, view: UnitView) -> None:
        """The selected sensor's recent values and limits; only while the trends are open."""
        if not self.trend_box.value or view.trend_version == self.trend_version:
            return
        self.trend_version = view.trend_version
        sensors = sorted(view.trends)
        if list(self.sensor.options) != sensors:
            top = next((str(t.get("sensor")) for t in view.top_sensors), None)
            current = self.sensor.value if self.sensor.value in sensors else None
            chosen = current or (top if top in sensors else (sensors[0] if sensors else None))
            self.sensor.set_options(sensors, value=chosen)
        name = self.sensor.value
        series = self.trend.options["series"][0]
        series["data"] = [[ts * 1000.0, v] for ts, v in view.trends.get(name or "", ())]
        limits = self.limits.get(name or "")
        series["markLine"]["data"] = (
            []
            if limits is None
            else [
                {"yAxis": value, "name": level.upper()}
                for level, value in limits.model_dump().items()
                if value is not None
            ]
        )
        self.trend.update()

    def update_agent(self, view: UnitView, agent: AgentView | None) -> None:
        if agent is None:
            text = f"agent {view.agent_id}: no status" if view.agent_id else "agent: unknown"
        else:
            text = f"agent {agent.agent_id}: {agent.state}"
            warned = len(agent.training_warnings)
            if warned:  # the set was trained on too little data, say: its alarms weigh less
                text += f" · model set has {warned} training warning" + "s" * (warned > 1)
        if text != self.agent_text:
            self.agent_text = text
            self.agent.text = text
            online = agent is not None and agent.state == "online"
            self.agent.classes(replace="text-green-8" if online else "text-red-8")
            self.agent.props(f"data-online={'true' if online else 'false'}")


def register(console: Console) -> None:
    state = console.state
    settings = console.settings

    @ui.page("/")
    def live(request: Request) -> None:
        frame(console, request, "Live")
        empty = ui.label(
            "Waiting for agents… (subscribed to plants: " + ", ".join(console.settings.plants) + ")"
        ).classes("text-grey-7")
        grid = ui.element("div").classes("w-full grid gap-3")
        grid.style("grid-template-columns: repeat(auto-fill, minmax(330px, 1fr))")
        cards: dict[tuple[str, str], UnitCard] = {}
        seen = {"version": -1}

        def refresh() -> None:
            if state.version == seen["version"]:
                for view in state.sorted_units():  # readings alone: only open trends redraw
                    card = cards.get((view.plant, view.unit))
                    if card is not None:
                        card.update_trend(view)
                        card.update_chart(view)
                return
            seen["version"] = state.version
            for view in state.sorted_units():
                key = (view.plant, view.unit)
                card = cards.get(key)
                if card is None:
                    with grid:
                        card = cards[key] = UnitCard(
                            view, settings.limits_for(view.unit), settings.web.chart_refresh_seconds
                        )
                card.update(view, state.agent_of(view))
            empty.set_visibility(not cards)

        refresh()
        ui.timer(console.settings.web.refresh_seconds, refresh)
