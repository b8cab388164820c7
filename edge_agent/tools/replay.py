"""Replay: run a CSV of recorded readings through the live agent's engine, offline.

Each row becomes one telemetry message of one unit and goes through the very same
``Engine.handle_message`` and ``Engine.tick`` as live traffic, with a simulated clock (a
row arrives at its own timestamp). What comes out is what the agent would have done on
that data: one JSON line per closed step with every model's score and decision, the
ensemble decision, the alarm states and the alerts raised or cleared at that step. Use it
to check a new model set on an incident before deploying it, or to tune alarm delays.

Timestamps are read as ``edge-train`` reads them: Unix seconds or ISO 8601, a time
without offset taken as UTC; so are the field separator and the decimal mark (guessed from
the head of the file unless given, :mod:`edge_agent.pipeline.table_format`). Empty cells
(or ``nan``) are missing readings: the engine carries the last value forward or marks the
step stale, as it would live. Columns other than the timestamp and the model set's sensors
are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from edge_agent.config import AgentSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alerts import Alert, rfc3339
from edge_agent.pipeline.engine import Engine, StepOutcome, TickResult
from edge_agent.pipeline.ingest import EventLogger
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.table_columns import AUTO
from edge_agent.tools.recorded_csv import TableLayout, resolve_layout, rows
from edge_agent.topics import fill


@dataclass(frozen=True)
class ReplaySummary:
    unit: str
    rows: int
    #: Closed steps, i.e. lines written.
    steps: int
    scored: int
    #: Scored steps whose ensemble decision was anomalous.
    anomalous: int
    alerts_raised: int
    alerts_cleared: int
    #: Raised alerts held back by the flood guard.
    alerts_suppressed: int
    #: Empty or non-numeric sensor cells (treated as missing readings).
    missing_cells: int
    #: Telemetry messages or values the engine's ingest rejected (e.g. out of range).
    rejected: int
    first_ts: float | None
    last_ts: float | None
    model_set_version: str
    output: Path
    #: What training warned about the model set (e.g. too little fit data).
    training_warnings: tuple[str, ...] = ()
    #: How the file was read (separator, decimal mark, time column and layout).
    layout: TableLayout | None = None

    def _layout_text(self) -> str:
        """What was read other than the defaults, and a day/month ambiguity to check."""
        lay = self.layout
        if lay is None:
            return ""
        parts = []
        if (lay.separator, lay.decimal) != (",", "."):
            parts.append(f"fields separated by {lay.separator!r}, decimal mark {lay.decimal!r}")
        if lay.time_format != "iso":
            parts.append(f"times read as {lay.time_format!r}")
        if lay.alike:
            parts.append(f"{', '.join(map(repr, lay.alike))} read them as well: check the dates")
        return f" ({'; '.join(parts)})" if parts else ""

    def describe(self) -> str:
        """A few human-readable lines for the command line."""
        span = (
            f"{rfc3339(self.first_ts)} .. {rfc3339(self.last_ts)}"
            if self.first_ts is not None and self.last_ts is not None
            else "no data"
        )
        return "\n".join(
            [
                f"replayed {self.rows} rows of unit {self.unit} ({span}) "
                f"with model set {self.model_set_version}",
                f"steps: {self.steps} written to {self.output}, {self.scored} scored, "
                f"{self.anomalous} anomalous",
                f"alerts: {self.alerts_raised} raised, {self.alerts_cleared} cleared, "
                f"{self.alerts_suppressed} held back by the flood guard",
                f"input: {self.missing_cells} missing cells, {self.rejected} rejected readings"
                + self._layout_text(),
                *(f"warning from training: {w}" for w in self.training_warnings),
            ]
        )


def _total(counter: Any) -> int:
    """Sum of a (labelled) Prometheus counter's samples."""
    return int(
        sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))
    )


def _models_doc(step: StepOutcome, model_names: list[str]) -> dict[str, Any]:
    return {
        name: (step.models[name].to_dict() if name in step.models else None) for name in model_names
    }


def step_line(step: StepOutcome, model_names: list[str], alerts: list[Alert]) -> dict[str, Any]:
    """One output line: everything the engine decided about one step."""
    return {
        "ts": rfc3339(step.ts),
        "unit": step.unit,
        "how": step.how,
        "scored": step.scored,
        "not_scored": step.not_scored,
        "models": _models_doc(step, model_names),
        "score": step.score,
        "decision": step.decision,
        "top_sensors": [{"sensor": s.sensor, "error": s.error} for s in step.top_sensors],
        "stale_sensors": list(step.stale_sensors),
        "carried": list(step.carried),
        "alarms": dict(step.alarms),
        "alerts": [a.to_dict() for a in alerts],
    }


def replay(
    settings: AgentSettings,
    model_set: ModelSet,
    input_csv: Path,
    output: Path,
    *,
    timestamp_column: str = AUTO,
    separator: str = AUTO,
    decimal: str = AUTO,
    time_format: str = AUTO,
    unit: str | None = None,
    log: EventLogger | None = None,
) -> ReplaySummary:
    """Replay ``input_csv`` through a fresh engine; write JSON lines to ``output``."""
    input_csv, output = Path(input_csv), Path(output)
    if unit is None:
        unit = settings.units[0].name if settings.units else "replay"
    configured = {u.name for u in settings.units}
    if unit not in configured and not settings.ingest.auto_discover_units:
        raise ValueError(
            f"unit {unit!r} is not configured (units: {sorted(configured)}) "
            "and ingest.auto_discover_units is off"
        )
    metrics = Metrics()
    engine = Engine(
        settings, model_set, metrics, log or structlog.get_logger("edge_agent.tools.replay")
    )
    topic = fill(settings.topics.telemetry, plant=settings.plant, unit=unit)
    model_names = list(model_set.manifest.models)
    counts = {"rows": 0, "steps": 0, "scored": 0, "anomalous": 0, "missing": 0}
    first_ts: float | None = None
    last_ts: float | None = None
    held: list[Alert] = []  # alerts not tied to a step (flood summaries), for the next line
    layout = resolve_layout(input_csv, separator, decimal, timestamp_column, time_format)

    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as out:

        def write(result: TickResult) -> None:
            in_steps = {id(a) for s in result.steps for a in s.alerts}
            held.extend(a for a in result.alerts if id(a) not in in_steps)
            for step in result.steps:
                alerts = step.alerts
                if held:
                    alerts, held[:] = [*alerts, *held], []
                out.write(orjson.dumps(step_line(step, model_names, alerts)) + b"\n")
                counts["steps"] += 1
                counts["scored"] += step.scored
                counts["anomalous"] += bool(step.decision)

        for _line, ts, values, missing in rows(input_csv, layout, engine.sensors):
            counts["rows"] += 1
            counts["missing"] += missing
            first_ts = ts if first_ts is None else first_ts
            last_ts = ts
            if values:
                payload = orjson.dumps({"ts": ts, "values": values})
                engine.handle_message(topic, payload, ts)
            write(engine.tick(ts))
        if last_ts is not None:
            # Let the last steps close on their deadline.
            end = last_ts + engine.step_seconds + settings.align.lateness_seconds + 1e-3
            write(engine.tick(end))
    engine.flush_metrics()

    return ReplaySummary(
        unit=unit,
        rows=counts["rows"],
        steps=counts["steps"],
        scored=counts["scored"],
        anomalous=counts["anomalous"],
        alerts_raised=_total(metrics.alerts_raised),
        alerts_cleared=_total(metrics.alerts_cleared),
        alerts_suppressed=_total(metrics.alerts_suppressed),
        missing_cells=counts["missing"],
        rejected=_total(metrics.messages_rejected),
        first_ts=first_ts,
        last_ts=last_ts,
        model_set_version=model_set.version,
        training_warnings=tuple(model_set.manifest.training_warnings),
        output=output,
        layout=layout,
    )
