"""A training report a person can read: ``<out>/report/report.md`` plus PNG figures.

The manifest holds the numbers the agent needs; the report shows *why* they are what they
are — where the thresholds fall in the score distributions, whether the LSTM converged,
which sensors drive the reconstruction error, and what detections look like in time. The
tables are here; the figures are drawn by :mod:`training.figures`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .figures import (
    plot_score_distributions,
    plot_sensor_contributions,
    plot_test_timeseries,
    plot_training_curves,
    sensor_contributions,
)

if TYPE_CHECKING:
    from .result import TrainResult

REPORT_DIR = "report"
FIGURES = {
    "scores": "score_distributions.png",
    "training": "lstm_training.png",
    "sensors": "sensor_contributions.png",
    "timeseries": "test_timeseries.png",
}

METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (key, header, format)
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("f1", "F1", "{:.3f}"),
    ("far_percent", "FAR %", "{:.2f}"),
    ("far_settled_percent", "FAR settled %", "{:.2f}"),
    ("mar_percent", "MAR %", "{:.2f}"),
    ("events", "events", "{}"),
    ("event_recall", "event recall", "{:.3f}"),
    ("mean_detection_delay_seconds", "mean delay s", "{:.1f}"),
    ("false_alarms_per_day", "false alarms/day", "{:.2f}"),
)


def _cell(metrics: dict[str, Any], key: str, fmt: str) -> str:
    if key == "events":
        return f"{metrics['events_detected']}/{metrics['events']}"
    value = metrics.get(key)
    return "n/a" if value is None else fmt.format(value)


def metrics_rows(metrics: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per detector (models, then the ensemble) of a metrics dict."""
    header = ["detector", *(h for _, h, _ in METRIC_COLUMNS)]
    order = [k for k in metrics if k != "ensemble"] + (
        ["ensemble"] if "ensemble" in metrics else []
    )
    rows = [[name, *(_cell(metrics[name], k, f) for k, _, f in METRIC_COLUMNS)] for name in order]
    return header, rows


def format_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """A fixed-width text table, or a Markdown one."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in rows]
    return "\n".join(out)


def metrics_table(metrics: dict[str, dict[str, Any]], markdown: bool = False) -> str:
    header, rows = metrics_rows(metrics)
    return format_table(header, rows, markdown)


# --- the report ------------------------------------------------------------------------------


def _md_kv(rows: list[tuple[str, Any]]) -> str:
    return format_table(["", ""], [[str(k), str(v)] for k, v in rows], markdown=True)


def _settling(labels: NDArray[np.int8], window: int) -> NDArray[np.bool_]:
    """Normal steps whose window (the ``window`` steps ending there) still holds a fault."""
    c = np.concatenate(([0], np.cumsum(labels != 0)))
    idx = np.arange(len(labels))
    lo = np.maximum(idx - window + 1, 0)
    return ((c[idx + 1] - c[lo]) > 0) & (labels == 0)


def _alarm_calibration_text(a: dict[str, float] | None) -> str:
    if not a:
        return ""
    return (
        f"; raised to {a['threshold']:.4g} for a stated {a['alarms_per_day']:g} alarms per unit "
        f"per day: the out-of-sample data ({a['covered_days']:.2g} days) stay below "
        f"{a['quiet_level']:.4g} for the alarm's on-delay, plus {a['margin']:.3g} for the "
        f"longer horizon (exponential tail, scale {a['tail_scale']:.3g})"
    )


def model_value_lines(test: dict[str, dict[str, Any]]) -> list[str]:
    """Does each model earn its place? The ensemble's F1 against each model's alone."""
    ens = test.get("ensemble", {}).get("f1")
    if ens is None:
        return []
    lines = []
    for key, m in test.items():
        if key == "ensemble" or m.get("f1") is None:
            continue
        if ens > m["f1"] + 1e-9:
            lines.append(f"- the ensemble (F1 {ens:.3f}) beats {key} alone (F1 {m['f1']:.3f})")
        else:
            lines.append(
                f"- **{key} alone (F1 {m['f1']:.3f}) is as good as or better than the "
                f"ensemble (F1 {ens:.3f})**: the other model adds nothing on this data"
            )
    return lines


def write_report(result: TrainResult) -> Path:
    """Write figures and ``report.md`` into ``<out>/report/``; return the Markdown path."""
    out = Path(result.out_dir) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    manifest = result.manifest
    sensors = manifest.sensor_names
    units = [s.unit for s in manifest.sensors]
    thresholds = {k: m.threshold for k, m in manifest.models.items()}
    shown = result.test if result.test is not None else result.calibration
    settling = None
    if shown.labels is not None:
        settling = _settling(shown.labels, manifest.window)
    plot_score_distributions(shown, thresholds, settling, out / FIGURES["scores"])
    plot_training_curves(result.history, out / FIGURES["training"])
    contributions = sensor_contributions(shown) if shown.per_sensor is not None else {}
    if contributions:
        plot_sensor_contributions(contributions, sensors, out / FIGURES["sensors"])
    if result.test is not None:
        votes = result.test.votes(dict(manifest.models), manifest.voting)
        plot_test_timeseries(
            result.test,
            sensors,
            units,
            votes.ensemble_decision,
            votes.ensemble_score,
            out / FIGURES["timeseries"],
        )

    data = result.data
    metrics = result.metrics
    split = metrics["data"]["split_steps"]
    th = metrics["thresholds"]
    oos = metrics["out_of_sample"]
    lines = [
        f"# Training report — model set {manifest.model_set_version}",
        "",
        f"Created {manifest.created_at}. Models: `{out.parent}/` "
        f"({', '.join(m.file for m in manifest.models.values())}, manifest.json).",
        "",
        *(f"**Warning:** {w}\n" for w in metrics.get("warnings", [])),
        "## Data",
        "",
        _md_kv(
            [
                ("source", f"`{data.source}`"),
                ("sha256", f"`{data.sha256}`"),
                ("rows read", data.rows_read),
                ("steps", f"{data.n_steps} of {data.step_seconds:g} s"),
                ("sensors", ", ".join(sensors)),
                (
                    "labels",
                    "none"
                    if data.labels is None
                    else f"{100 * float(data.labels.mean()):.2f}% anomalous "
                    "(used for evaluation only, never to fit or place a threshold)",
                ),
                ("interpolated cells", data.interpolated_cells),
                (
                    "text cells read as missing",
                    ", ".join(
                        f"`{name}` {n} (the first `{text}`, line {line})"
                        for name, (n, line, text) in data.text_cells.items()
                    )
                    or "none",
                ),
                (
                    "long gaps (no window spans one)",
                    f"{len(data.gaps)}, {metrics['data']['gaps']['steps']} steps; the longest "
                    f"{max(g.steps for g in data.gaps)} steps"
                    if data.gaps
                    else "none",
                ),
                (
                    "time / label columns",
                    f"`{data.timestamp_column}` / "
                    + (f"`{data.label_column}`" if data.label_column else "none")
                    + (" (guessed from the file)" if data.guessed_columns else ""),
                ),
                (
                    "left out, never moved",
                    ", ".join(data.constant_columns) if data.constant_columns else "none",
                ),
                (
                    "split (steps)",
                    f"fit {split['fit']}, test {split['test']} (chronological)"
                    + (
                        f"; evaluated on `{metrics['data']['evaluation_file']}`"
                        if metrics["data"].get("evaluation_file")
                        else ""
                    ),
                ),
                (
                    "calibration",
                    f"{metrics['data']['calibration_mode']}"
                    + (
                        f" ({metrics['data']['folds']} time-ordered folds, purged)"
                        if metrics["data"]["calibration_mode"] == "kfold"
                        else " (last share of the fit part)"
                    )
                    + f": {oos['steps']} out-of-sample steps",
                ),
                ("window / rolling", f"{manifest.window} / {manifest.features.rolling} steps"),
            ]
        ),
        "",
        "## Thresholds (out-of-sample scores, no labels)",
        "",
        format_table(
            ["model", "threshold", "median", "scale"],
            [
                [k, f"{th[k]['threshold']:.6g}", f"{th[k]['center']:.6g}", f"{th[k]['scale']:.4g}"]
                for k in manifest.models
            ],
            markdown=True,
        ),
        "",
        f"Ensemble: {manifest.voting.strategy} ({manifest.voting.fusion}), weights "
        f"{manifest.voting.weights}; point threshold "
        f"{th.get('point_fused_threshold', th['fused_threshold']):.4g} = quantile "
        f"{th['quantile']} of the out-of-sample fused scores (stated point false-alarm rate "
        f"{100 * (1 - th['quantile']):.2g} % on normal data)"
        + _alarm_calibration_text(metrics.get("alarm_calibration"))
        + ". Out of sample the ensemble "
        f"flagged {oos['flagged_percent']['ensemble']:.2f} % of steps and raised "
        f"{oos['alarm_episodes']} alarm episodes"
        + (
            f" ({oos['alarm_episodes_per_day']:.2f} per day)"
            if oos.get("alarm_episodes_per_day") is not None
            else ""
        )
        + ".",
        "",
        "## Evaluation (scored through onnxruntime)",
        "",
    ]
    test = metrics.get("test", {})
    if "ensemble" in test:
        lines += [
            "Point decisions:",
            "",
            metrics_table(test, markdown=True),
            "",
            "Alarm episodes (the agent's on/off delays applied — what an operator sees):",
            "",
            metrics_table(metrics["test_alarm"], markdown=True),
            "",
            "FAR = % of normal points flagged; FAR settled = the same without the "
            f"{manifest.window - 1} steps after each fault, whose windows still contain it; "
            "MAR = % of anomalous points missed. An event is a run of anomalous points and "
            "counts as detected when any of its points is flagged; false alarms are flagged "
            "runs that start outside every event.",
            "",
            "Does each model earn its place (point decisions)?",
            "",
            *model_value_lines(test),
        ]
    elif "flagged_percent" in test:
        lines.append(
            "No labels: share of test steps flagged — "
            + ", ".join(f"{k} {v:.2f}%" for k, v in test["flagged_percent"].items())
        )
    else:
        lines.append("No test part and no evaluation file: nothing to evaluate on.")
    timings = metrics.get("timings_seconds", {})
    lines += [
        "",
        "## Timings",
        "",
        format_table(
            ["phase", "seconds"],
            [[k, f"{v:.1f}"] for k, v in timings.items()],
            markdown=True,
        ),
        "",
        f"LSTM: {len(result.history['loss'])} epochs, best val_loss "
        f"{min(result.history['val_loss']):.5f}.",
        "",
        "## Figures",
        "",
        f"![Score distributions]({FIGURES['scores']})",
        "",
        f"![LSTM training curves]({FIGURES['training']})",
        "",
    ]
    if contributions:
        lines += [f"![Per-sensor contributions]({FIGURES['sensors']})", ""]
    if result.test is not None:
        lines += [f"![Test time series]({FIGURES['timeseries']})", ""]
    from .diagnostics import diagnostics_section  # cross-validation, importance

    lines += diagnostics_section(result, out)
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
