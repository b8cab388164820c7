"""``train(cfg)``: CSV in, verified model set (two ONNX files + manifest.json + report) out.

The order matters and is the point of this module:

1. load and validate the CSV; hold out a test part at its end only when asked (labelled
   data: evaluation) — everything else is the fit part;
2. fit both models on the fit part and score every fit window *out of sample* (k-fold, or a
   hold-out for large data: :mod:`training.calibration`). Labels never fit a model or place
   a threshold: the fit part is taken as normal operation, as a plant's history is;
3. export both to ONNX; place per-model thresholds, the normalisation and the one ensemble
   threshold on the out-of-sample scores at the stated false-alarm rate;
4. evaluate **through onnxruntime** (:class:`edge_agent.pipeline.scoring.ModelSet`, the agent's own
   code) on the test part or a separate labelled file, as point decisions and as alarm
   episodes after the agent's on/off delays;
5. write the manifest, load it back with :func:`edge_agent.pipeline.manifest.load_manifest`, and
   only then move the files into the output directory (a failed run never leaves a
   half-written model set where the agent looks).

Stage 2 is :mod:`training.out_of_sample`, the export of stage 3 :mod:`training.export`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from edge_agent.config import AlarmSettings
from edge_agent.pipeline.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest
from edge_agent.pipeline.scoring import ModelSet

from . import calibration
from .clock import Clock, Progress
from .config import TrainConfig
from .data import DataError, Dataset, Split, chronological_split, load_csv
from .evaluation import ScoredSteps, evaluate, evaluation_data, score_steps
from .export import export_models, manifest_dict
from .model_set import HELD_SIGNAL_SECONDS, MODEL_FILES, model_set_version, write_manifest
from .out_of_sample import Fitted, fit_models
from .result import TrainResult
from .tracking import record_run

#: Below this much fit data, training warns that the set cannot know the plant's normal range
#: (one day: not even the daily load cycle). Measured on SKAB's healthy pump
#: (``benchmarks/skab_healthy.py``): fitted on 6.7 min, 98.75 % of the afternoon was flagged;
#: on 78 min, 2.9 alarms an hour against a stated 0.5 % of steps.
MIN_FIT_HOURS = 24.0


def _checked_manifest(base: dict[str, Any]) -> Manifest:
    """The manifest as the agent will read it; one it would refuse is training's bug, said in
    one message rather than a traceback (and nothing is written)."""
    try:
        return Manifest.model_validate(base)
    except ValidationError as exc:
        raise ManifestError(
            f"training produced a manifest the agent would refuse (a bug in edge-train): {exc}"
        ) from None


def held_signal_warnings(sensors: list[dict[str, Any]]) -> list[str]:
    """One warning per sensor training gave no frozen check (a held signal, see
    :data:`training.model_set.HELD_SIGNAL_SECONDS`), so the engineer knows which tags a stuck
    transmitter would not be flagged on by that check."""
    hours = HELD_SIGNAL_SECONDS / 3600
    return [
        f"{s['name']} held one exact value for more than {hours:g} h in the fit data: it gets "
        "no frozen check (a steady process and a stuck transmitter look alike on it); the "
        "stale and model checks still apply"
        for s in sensors
        if s.get("frozen_limit_steps") is None
    ]


def fit_span_warning(fit_steps: int, step_seconds: float) -> str | None:
    """The warning for a fit part shorter than :data:`MIN_FIT_HOURS`, else None."""
    hours = fit_steps * step_seconds / 3600
    if hours >= MIN_FIT_HOURS:
        return None
    span = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"
    return (
        f"the fit part covers {span} of operation ({fit_steps} steps of {step_seconds:g} s), "
        f"less than {MIN_FIT_HOURS:g} h: the models judge levels and shapes against exactly "
        "that, so expect alarms wherever the plant goes past it (another load, the afternoon's "
        "temperatures, wear); the stated false-alarm rates hold only on data like the fit part. "
        "Fit on the plant's whole normal range (days to weeks of historian data)."
    )


#: Gaps listed one by one in the manifest's metrics (all are counted).
MAX_LISTED_GAPS = 50


def gap_summary(data: Dataset, max_gap_seconds: float) -> str | None:
    """What training says about the gaps it did not interpolate (None: there were none)."""
    if not data.gaps:
        return None
    longest = max(data.gaps, key=lambda g: g.steps)
    who = "" if longest.column is None else f" of {longest.column!r}"
    return (
        f"{len(data.gaps)} gap(s) longer than {max_gap_seconds:g} s (data.max_gap_seconds) "
        f"not interpolated, {data.gap_step_count} steps in all; the longest: {longest.steps} steps "
        f"({longest.steps * data.step_seconds:g} s){who} {longest.place}. No window spans a "
        f"gap (the agent, too, starts its window again after a stale step)"
    )


def _check_parts(data: Dataset, split: Split, cfg: TrainConfig) -> None:
    sizes = split.sizes()
    need = 2 * cfg.window + 2 * cfg.calibration.folds
    if sizes["fit"] < need:
        raise DataError(
            f"{data.source}: {sizes['fit']} steps to fit are too few for window {cfg.window} "
            f"and {cfg.calibration.folds} folds (needs >= {need})"
        )
    if 0 < sizes["test"] < cfg.window:
        raise DataError(
            f"{data.source}: the test part has {sizes['test']} steps (needs >= {cfg.window})"
        )
    if data.gaps:
        windows = len(data.window_ends(cfg.window, split.fit))
        if windows < need - cfg.window + 1:
            longest = max((s.stop - s.start for s in data.segments(split.fit)), default=0)
            raise DataError(
                f"{data.source}: only {windows} windows of {cfg.window} steps in the fit part "
                f"span no gap longer than {cfg.data.max_gap_seconds:g} s (needs >= "
                f"{need - cfg.window + 1}; the longest stretch without one is {longest} steps)."
                f" Raise data.max_gap_seconds (--max-gap-seconds) to interpolate them, or "
                f"export a longer period"
            )
        if sizes["test"] and not len(data.window_ends(cfg.window, split.test)):
            raise DataError(
                f"{data.source}: every window of {cfg.window} steps in the test part touches "
                f"a gap longer than {cfg.data.max_gap_seconds:g} s; nothing left to evaluate"
            )
    fit = data.values[split.fit]
    flat = [s for j, s in enumerate(data.sensors) if np.ptp(fit[:, j]) == 0]
    if flat:
        raise DataError(
            f"{data.source}: sensors {flat} are constant in the fit part "
            f"(first {sizes['fit']} steps); a constant sensor cannot be scaled"
        )


def _calibration_steps(data: Dataset, fitted: Fitted, cal: calibration.Calibration) -> ScoredSteps:
    idx = fitted.plan.scored
    return ScoredSteps(
        steps=idx,
        timestamps=data.timestamps[idx],
        values=data.values[idx],
        labels=None if data.labels is None else data.labels[idx],
        scores=dict(cal.scores),
        per_sensor=None,
        seconds=0.0,
    )


def train(cfg: TrainConfig, progress: Progress = print) -> TrainResult:
    """Fit, export, calibrate, evaluate and write one model set (see module docstring)."""
    clock = Clock(progress)
    if cfg.data.path is None:
        raise DataError("no training data: give --data CSV or set data.path in the config")
    out = Path(cfg.output_dir)

    with clock.phase("load", f"loading {cfg.data.path}"):
        data = load_csv(cfg.data.path, cfg.data.spec())
        evaluation = evaluation_data(cfg, data)
    clock.say(
        f"{data.rows_read} rows -> {data.n_steps} steps of {data.step_seconds:g}s, "
        f"{len(data.sensors)} sensors {list(data.sensors)}, "
        + (
            f"{100 * data.labels.mean():.2f}% labelled anomalous (labels evaluate only)"
            if data.labels is not None
            else "no labels"
        )
        + (f", {data.interpolated_cells} cells interpolated" if data.interpolated_cells else "")
        + (f", ignored columns {list(data.ignored_columns)}" if data.ignored_columns else "")
        + (
            f", left out constant columns {list(data.constant_columns)}"
            if data.constant_columns
            else ""
        )
    )
    if data.text_cells:
        listed = ", ".join(
            f"{name!r} {n} (the first {text!r}, line {line})"
            for name, (n, line, text) in data.text_cells.items()
        )
        clock.say(f"text cells read as missing readings: {listed}")
    if data.separator != "," and cfg.data.separator == "auto":
        clock.say(f"fields separated by {data.separator!r} (guessed; --separator to choose)")
    if data.decimal != "." and cfg.data.decimal == "auto":
        clock.say(f"decimal mark {data.decimal!r} (guessed; --decimal to choose)")
    if data.time_format != "iso" and cfg.data.time_format == "auto":
        clock.say(
            f"times read as {data.time_format!r} (guessed; --time-format to choose)"
            + (
                f"; {', '.join(map(repr, data.time_format_alike))} would read them as well "
                f"(this file cannot tell day from month): check the dates"
                if data.time_format_alike
                else ""
            )
        )
    for guessed in data.guessed_columns:
        column = data.timestamp_column if guessed == "timestamp" else data.label_column
        option = f"--{guessed}-column"
        clock.say(
            f"{guessed} column: {column!r} (guessed from the file; {option} to choose)"
            if column is not None
            else f"no label column found: unlabelled ({option} to name one)"
        )
    test_fraction = cfg.split.test
    if test_fraction == "auto":
        test_fraction = 0.2 if data.labels is not None and evaluation is None else 0.0
    gaps = gap_summary(data, cfg.data.max_gap_seconds)
    if gaps:
        clock.say(gaps)
    split = chronological_split(data.n_steps, test_fraction)
    _check_parts(data, split, cfg)
    clock.say(f"split (chronological): {split.sizes()}")
    fit_steps = split.sizes()["fit"]  # the span, outages included: did it see a whole day?
    warnings = [w for w in (fit_span_warning(fit_steps, data.step_seconds),) if w]
    for w in warnings:
        clock.say(f"warning: {w}")
    fitted = fit_models(cfg, data, split, clock)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with clock.phase("export", "exporting both models to ONNX"):
            entries = export_models(cfg, fitted, len(data.sensors), staging)
        cal = calibration.calibrate(
            fitted.plan.scored,
            fitted.oos,
            entries,
            cfg.voting.weights,
            cfg.calibration.quantile,
            cfg.voting.fusion,
        )
        entries = cal.apply(entries)
        fused_threshold = cal.fused_threshold
        alarm_cal: dict[str, float] | None = None
        if cfg.calibration.alarms_per_day is not None:
            days = len(cal.steps) * data.step_seconds / 86400
            fused_threshold, alarm_cal = calibration.alarm_threshold(
                cal.fused,
                cal.fused_threshold,
                AlarmSettings().on_delay,
                days,
                cfg.calibration.alarms_per_day,
            )
            clock.say(
                f"alarm calibration: {cfg.calibration.alarms_per_day:g} alarms/day stated; "
                f"quiet level {alarm_cal['quiet_level']:.4g} + margin "
                f"{alarm_cal['margin']:.4g} -> ensemble threshold {fused_threshold:.4g}"
            )
        voting = cfg.voting.model_copy(
            update={"fused_threshold": fused_threshold, "quantile": cal.quantile}
        )
        clock.say(
            f"calibrated on {len(cal.steps)} out-of-sample steps ({fitted.plan.mode}): "
            + ", ".join(f"{k} threshold {v:.5g}" for k, v in cal.thresholds.items())
            + f", ensemble threshold {cal.fused_threshold:.4g} (q{cal.quantile})"
        )
        created = datetime.now(UTC).replace(microsecond=0)
        base = manifest_dict(cfg, data, split, fitted, entries, voting, created)
        for w in held_signal_warnings(base["sensors"]):
            warnings.append(w)
            clock.say(f"warning: {w}")
        write_manifest(_checked_manifest(base), staging)
        model_set = ModelSet.load(staging, threads=cfg.threads)
        test_scored: ScoredSteps | None = None
        with clock.phase("evaluation", "scoring the evaluation steps with onnxruntime"):
            if evaluation is not None:
                test_scored = score_steps(model_set, evaluation, slice(0, evaluation.n_steps))
            elif split.test.stop > split.test.start:
                test_scored = score_steps(model_set, data, split.test)
        cal_steps = _calibration_steps(data, fitted, cal)
        metrics: dict[str, Any] = {
            "data": {
                "source": data.source.name,
                "rows": data.rows_read,
                "steps": data.n_steps,
                "step_seconds": data.step_seconds,
                "interpolated_cells": data.interpolated_cells,
                "text_cells": {
                    name: {"count": n, "first_line": line, "first": text}
                    for name, (n, line, text) in data.text_cells.items()
                },
                "gaps": {
                    "count": len(data.gaps),
                    "steps": data.gap_step_count,
                    "first": [
                        {
                            "start_step": g.start,
                            "steps": g.steps,
                            "seconds": g.steps * data.step_seconds,
                            "column": g.column,
                            "where": g.place,
                        }
                        for g in data.gaps[:MAX_LISTED_GAPS]
                    ],
                },
                "timestamp_column": data.timestamp_column,
                "separator": data.separator,
                "decimal": data.decimal,
                "time_format": data.time_format,
                "label_column": data.label_column,
                "constant_columns": list(data.constant_columns),
                "split_steps": split.sizes(),
                "labelled": data.labels is not None,
                "evaluation_file": None if evaluation is None else evaluation.source.name,
                "iforest_training_rows": fitted.final.iforest_rows,
                "lstm_training_windows": fitted.final.lstm_windows,
                "calibration_mode": fitted.plan.mode,
                "folds": len(fitted.plan.folds) if fitted.plan.mode == "kfold" else 0,
                "fit_hours": fit_steps * data.step_seconds / 3600,
            },
            "warnings": warnings,
            "thresholds": {
                **cal.summary(),
                "point_fused_threshold": cal.fused_threshold,
                "fused_threshold": fused_threshold,
            },
            "alarm_calibration": alarm_cal,
            "train_seconds": {
                k: v for k, v in clock.timings.items() if k == "fit" or k.startswith("fold_")
            },
            "lstm_ae_history": fitted.final.history,
            **evaluate(cfg, entries, voting, test_scored, cal_steps, data.step_seconds, clock),
            "timings_seconds": dict(clock.timings),
        }
        base["metrics"] = json.loads(json.dumps(metrics, default=float))
        base["model_set_version"] = model_set_version(base, created)
        write_manifest(_checked_manifest(base), staging)
        load_manifest(staging, list(data.sensors))  # refuse to publish what the agent would
        out.mkdir(parents=True, exist_ok=True)
        for name in (*MODEL_FILES.values(), MANIFEST_NAME):  # manifest last
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = load_manifest(out, list(data.sensors))
    ModelSet.load(out, threads=1)  # and onnxruntime accepts the published files
    clock.say(f"model set {manifest.model_set_version} written to {out}/")

    result = TrainResult(
        out_dir=out,
        manifest=manifest,
        data=data,
        split=split,
        iforest=fitted.final.forest,
        lstm_scoring_model=fitted.final.scoring_model,
        history=fitted.final.history,
        calibration=cal_steps,
        test=test_scored,
        metrics=metrics,
        timings=clock.timings,
        plan_mode=fitted.plan.mode,
        test_data=None if test_scored is None else (evaluation or data),
        calibration_folds=[f.held_out for f in fitted.plan.folds],
    )
    if cfg.report:
        from .report import write_report

        with clock.phase("report", "writing the report"):
            result.report_path = write_report(result)
        clock.say(f"report: {result.report_path}")
    record_run(cfg, result, clock.say)  # MLflow run + registry version (unless turned off)
    clock.say(f"total {time.perf_counter() - clock.started:.1f}s")
    return result
