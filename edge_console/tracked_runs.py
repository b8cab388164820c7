"""Tracked training runs for the Models page, read from the MLflow store ``edge-train`` writes.

``edge-train train`` records every run (params, metrics, the model set as artifacts) and
registers the set (see ``training/tracking.py``); an ML engineer choosing which set to roll out
wants those runs beside what each agent runs. The console only reads: it lists the newest runs
of one experiment with the figures that decide (the ensemble's F1/FAR/MAR on the evaluation
data, its alarm-level false alarms per day) and the registry version each became.

mlflow is imported lazily: without tracking configured the console never needs it, and when it
is configured but not installed the page says what to install instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: Metric keys as ``training/tracking.py`` flattens the pipeline's metrics dict.
FIGURES: dict[str, str] = {
    "F1": "test.ensemble.f1",
    "FAR %": "test.ensemble.far_percent",
    "MAR %": "test.ensemble.mar_percent",
    "event recall": "test.ensemble.event_recall",
}
INSTALL_HINT = "tracked runs need mlflow-skinny: pip install -e '.[console,tracking]'"


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    name: str
    started: str  # ISO 8601 UTC, seconds
    status: str
    figures: dict[str, float | None]
    registered: str | None  # "name/version" when the run's set was registered


class TrackingUnavailable(RuntimeError):
    """The store cannot be read (mlflow missing, bad URI, unknown experiment)."""


def _client(uri: str) -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise TrackingUnavailable(INSTALL_HINT) from None
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def list_runs(uri: str, experiment: str, limit: int = 20) -> list[TrackedRun]:
    """The newest ``limit`` runs of ``experiment`` in the store at ``uri``, newest first."""
    client = _client(uri)
    try:
        exp = client.get_experiment_by_name(experiment)
    except Exception as exc:  # mlflow raises its own types per store; the message is what helps
        raise TrackingUnavailable(f"cannot read tracking store {uri}: {exc}") from None
    if exp is None:
        raise TrackingUnavailable(f"no experiment {experiment!r} in tracking store {uri}")
    runs = client.search_runs(
        [exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit
    )
    out = []
    for r in runs:
        metrics = r.data.metrics
        started = datetime.fromtimestamp(r.info.start_time / 1000, UTC)
        out.append(
            TrackedRun(
                run_id=r.info.run_id,
                name=r.info.run_name or "",
                started=started.isoformat(timespec="seconds").replace("+00:00", "Z"),
                status=r.info.status,
                figures={label: metrics.get(key) for label, key in FIGURES.items()},
                registered=r.data.tags.get("registered_model"),
            )
        )
    return out
