"""Models: the model set each agent runs (from its status), and that set's manifest; the
newest tracked training runs when ``tracking_uri`` is set (:mod:`edge_console.tracked_runs`).

Manifests are looked up by ``model_set_version`` in the configured ``model_dirs`` (e.g. the
training output folders kept on the console host); their report figures are served from
``/model-report/<version>/<file>.png``, and only those files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from nicegui import ui

from edge_agent.pipeline.manifest import warning_list

from ..runtime import Console
from ..tracked_runs import FIGURES, TrackingUnavailable, list_runs
from .layout import frame

_METRICS = ("precision", "recall", "f1", "far_percent", "event_recall", "false_alarms_per_day")


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else "–"


def find_manifests(dirs: list[Path]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """model_set_version -> (folder, manifest) for every readable manifest under ``dirs``."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for base in dirs:
        for path in [base / "manifest.json", *sorted(base.glob("*/manifest.json"))]:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            version = doc.get("model_set_version") if isinstance(doc, dict) else None
            if isinstance(version, str):
                found.setdefault(version, (path.parent, doc))
    return found


def _manifest_view(version: str, folder: Path, doc: dict[str, Any]) -> None:
    sensors = [
        s.get("name", "?") if isinstance(s, dict) else str(s) for s in doc.get("sensors", [])
    ]
    ui.label(
        f"created {doc.get('created_at')} · window {doc.get('window')} steps of "
        f"{doc.get('step_seconds')} s · {len(sensors)} sensors"
    ).classes("text-sm")
    ui.label("sensors: " + ", ".join(sensors)).classes("text-sm text-grey-8")
    voting = doc.get("voting") or {}
    models = doc.get("models") or {}
    thresholds = [
        f"{n}: threshold {m['threshold']:.4g}"
        for n, m in models.items()
        if isinstance(m, dict) and isinstance(m.get("threshold"), int | float)
    ]
    ui.label(
        f"voting: {voting.get('strategy')} {voting.get('weights')} · " + " · ".join(thresholds)
    ).classes("text-sm")
    test = ((doc.get("metrics") or {}).get("test")) or {}
    if test:
        columns = [{"name": "model", "label": "model", "field": "model", "align": "left"}] + [
            {"name": m, "label": m, "field": m} for m in _METRICS
        ]
        rows = [
            {"model": name, **{m: _fmt(v.get(m)) for m in _METRICS}}
            for name, v in test.items()
            if isinstance(v, dict)
        ]
        ui.label("Evaluation on the test split").classes("font-bold mt-2")
        ui.table(columns=columns, rows=rows, row_key="model").props("dense flat")
    figures = sorted((folder / "report").glob("*.png"))
    if figures:
        with ui.row().classes("gap-2"):
            for fig in figures:
                ui.image(f"/model-report/{version}/{fig.name}").classes("w-96").props(
                    f"alt='{fig.stem}'"
                )


def trace_text(trace: Any) -> str | None:
    """The tracked training run and registry version behind an agent's model set."""
    if not isinstance(trace, dict) or not trace.get("run_id"):
        return None
    text = f"training run {trace['run_id']}"
    if trace.get("registered_model"):
        text += f" · registered as {trace['registered_model']}"
        if trace.get("registered_version") is not None:
            text += f" version {trace['registered_version']}"
    return text


def manifest_warnings(entry: tuple[Path, dict[str, Any]] | None) -> list[str]:
    """``metrics.warnings`` of a manifest found in ``model_dirs`` (for agents whose status
    predates carrying them)."""
    return warning_list((entry[1].get("metrics") or {}).get("warnings") if entry else None)


def _warnings_view(warnings: list[str], testid: str) -> None:
    """Training's warnings about a set (too little fit data, …), where they cannot be missed."""
    if not warnings:
        return
    with ui.column().classes("gap-0").props(f"data-testid={testid}"):
        for warning in warnings:
            ui.label(f"training warning: {warning}").classes("text-sm text-orange-10")


def _trace_view(trace: Any, ui_url: str | None) -> None:
    text = trace_text(trace)
    if text is None:
        ui.label("model set not tracked (no training run recorded)").classes("text-sm text-grey-7")
        return
    ui.label(text).classes("text-sm").props("data-testid=tracking")
    name, version = trace.get("registered_model"), trace.get("registered_version")
    if ui_url and name and version is not None:
        url = f"{ui_url.rstrip('/')}/#/models/{quote(str(name), safe='')}/versions/{version}"
        ui.link("open in MLflow", url, new_tab=True).classes("text-sm")


def _runs_view(console: Console, running: dict[str, list[str]]) -> None:
    """The experiment's newest tracked runs; ``running``: run id -> agents running its set."""
    s = console.settings
    if not s.tracking_uri:
        return
    with ui.card().classes("w-full").props("data-testid=tracked-runs"):
        ui.label(f"Tracked runs — experiment {s.tracking_experiment}").classes("text-h6")
        try:
            runs = list_runs(s.tracking_uri, s.tracking_experiment, s.tracking_max_runs)
        except TrackingUnavailable as exc:
            ui.label(str(exc)).classes("text-sm text-negative")
            return
        columns = [
            {"name": c, "label": c, "field": c, "align": "left"}
            for c in ("run", "started", "status", *FIGURES, "registered", "running on")
        ]
        rows = [
            {
                "run": r.run_id[:12],
                "started": r.started,
                "status": r.status,
                **{k: _fmt(v) for k, v in r.figures.items()},
                "registered": r.registered or "–",
                "running on": ", ".join(running.get(r.run_id, [])) or "–",
            }
            for r in runs
        ]
        ui.table(columns=columns, rows=rows, row_key="run").props("dense flat")


def register(console: Console, app: FastAPI) -> None:
    @app.get("/model-report/{version}/{name}")
    def report_figure(version: str, name: str) -> FileResponse:
        entry = find_manifests(console.settings.model_dirs).get(version)
        if entry is None or "/" in name or not name.endswith(".png"):
            raise HTTPException(404)
        path = entry[0] / "report" / name
        if not path.is_file():
            raise HTTPException(404)
        return FileResponse(path, media_type="image/png")

    @ui.page("/models")
    def models(request: Request) -> None:
        frame(console, request, "Models")
        manifests = find_manifests(console.settings.model_dirs)
        agents = sorted(console.state.agents.values(), key=lambda a: (a.plant, a.agent_id))
        running: dict[str, list[str]] = {}
        for agent in agents:
            trace = agent.raw.get("model_set")
            if isinstance(trace, dict) and isinstance(trace.get("run_id"), str):
                running.setdefault(trace["run_id"], []).append(agent.agent_id)
        _runs_view(console, running)
        if not agents:
            ui.label("No agent has reported its status yet.").classes("text-grey-7")
        for agent in agents:
            with ui.card().classes("w-full").props(f"data-testid=agent-{agent.agent_id}"):
                ui.label(f"{agent.plant} / {agent.agent_id} — {agent.state}").classes("text-h6")
                versions = ", ".join(f"{k} {v}" for k, v in agent.versions.items())
                ui.label(versions).classes("text-sm text-grey-8")
                units = sorted(
                    v.unit for v in console.state.units.values()
                    if v.agent_id == agent.agent_id and v.plant == agent.plant
                )  # fmt: skip
                ui.label("units: " + (", ".join(units) or "none seen yet")).classes("text-sm")
                _trace_view(agent.raw.get("model_set"), console.settings.tracking_ui_url)
                entry = manifests.get(agent.model_set or "")
                _warnings_view(
                    agent.training_warnings or manifest_warnings(entry),
                    f"training-warnings-{agent.agent_id}",
                )
                if entry is None:
                    ui.label(
                        f"model set {agent.model_set}: manifest not found in model_dirs"
                    ).classes("text-sm text-grey-7")
                else:
                    _manifest_view(str(agent.model_set), *entry)
