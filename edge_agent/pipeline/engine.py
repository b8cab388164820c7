"""The engine: the agent's whole data path, from raw MQTT payloads to alerts, without I/O.

``handle_message`` does the little per-message work there is (validate, file under a
step); ``tick(now)`` does the batch work in three stages: ``prepare`` closes due steps and
appends them to each unit's window, :func:`~edge_agent.pipeline.outcome.run_models` scores
every window that is due in *one* onnxruntime batch, ``finish`` runs the alarms
(:mod:`.step_alarms`). The daemon runs the middle stage in a worker thread; replay and the
tests call ``tick``. Both take the time as an argument, so the live agent (wall clock) and
``replay`` (the data's own clock) run exactly this code. The caller publishes what
``tick`` returns.

Times are Unix seconds: ``received`` and ``now`` must come from the same clock as the
readings' timestamps (``time.time()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import structlog
from numpy.typing import NDArray

from edge_agent.config import AgentSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alarm import AlarmBook, alarm_key
from edge_agent.pipeline.alerts import ModelVerdict, Scores, rfc3339
from edge_agent.pipeline.align import Aligner, ClosedStep
from edge_agent.pipeline.envelope import Envelope
from edge_agent.pipeline.ingest import EventLogger, Ingestor
from edge_agent.pipeline.limits import compile_limits
from edge_agent.pipeline.lost_data import LostDataWarnings
from edge_agent.pipeline.manifest import ManifestError
from edge_agent.pipeline.outcome import (
    MAX_SCORE_BATCH,
    ScoreJob,
    StepOutcome,
    TickResult,
    run_models,
)
from edge_agent.pipeline.reconfigure import (
    RELOADABLE_KEYS,
    RESTART_REASON,
    ReloadReport,
    changed_keys,
)
from edge_agent.pipeline.scoring import ModelSet
from edge_agent.pipeline.sensor_health import SensorHealth
from edge_agent.pipeline.step_alarms import StepAlarms
from edge_agent.pipeline.windows import RingBuffer

__all__ = ["MAX_SCORE_BATCH", "Engine", "ScoreJob", "StepOutcome", "TickResult", "run_models"]


class _UnitState:
    __slots__ = ("buffer", "since_full")

    def __init__(self, window: int, n_sensors: int) -> None:
        self.buffer = RingBuffer(window, n_sensors)
        self.since_full = 0


class Engine:
    """Ingest → align → window → batch scoring → alarms, for every unit of one agent."""

    def __init__(
        self,
        settings: AgentSettings,
        model_set: ModelSet,
        metrics: Metrics,
        log: EventLogger | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.log: EventLogger = log if log is not None else structlog.get_logger("edge_agent")
        manifest = model_set.manifest
        self._model_set = model_set
        self.sensors: list[str] = manifest.sensor_names
        self.step_seconds: float = settings.align.step_seconds or manifest.step_seconds
        self.window: int = manifest.window
        self._stride = settings.models.stride
        self._top_k = min(settings.alarm.top_sensors, len(self.sensors))
        self._plant = settings.plant
        self._agent_id = settings.agent_id
        self._lateness = settings.align.lateness_seconds
        self.lost = LostDataWarnings(self.log)
        self._topic = ""  # of the message being filed: the example in lost-data warnings
        self._ingest = Ingestor(
            settings, [s.to_spec() for s in manifest.sensors], metrics, self.log, self.lost
        )
        self._aligner = Aligner(
            self.sensors,
            self.step_seconds,
            settings.align,
            metrics,
            # enough empty stale steps for the sensor_stale alarm to raise before skipping
            max_empty_stale_run=settings.alarm.on_delay + 1,
            on_lost=lambda what, unit, n: self.lost.readings_lost(what, unit, self._topic, n),
        )
        self._alarms = AlarmBook(settings.alarm, settings.agent_id, metrics)
        self._step_alarms = StepAlarms(
            self._alarms,
            compile_limits(settings, self.sensors),
            settings.plant,
            settings.agent_id,
            self.log,
            engineering_units=lambda: self._engineering_units,
            current_version=lambda: self._model_set.version,
        )
        self._units: dict[str, _UnitState] = {}
        self._n_received = 0
        self._n_messages_accepted = 0
        self._n_accepted = 0
        self._dropped = {r: metrics.steps_dropped.labels(r) for r in ("warmup", "stride")}
        self._set_envelope(manifest.sensors)
        self._publish_model_info()

    # -- public API ------------------------------------------------------------------------

    @property
    def model_set(self) -> ModelSet:
        return self._model_set

    @property
    def units_tracked(self) -> int:
        """Units with live state (at least one accepted reading)."""
        return self._aligner.n_units

    @property
    def unit_names(self) -> list[str]:
        return self._aligner.units

    def handle_message(self, topic: str, payload: bytes, received: float) -> None:
        """Validate one MQTT message and file its readings; never raises on bad input."""
        self._n_received += 1
        ingest = self._ingest
        readings = ingest.parse(topic, payload, received)
        if readings is not None:
            self._n_messages_accepted += 1
            self._n_accepted += len(readings.columns)
            self._topic = topic
            self._aligner.add_readings(readings)
        if ingest.bad_readings:
            for unit, ts, column in ingest.bad_readings:
                self._aligner.add_bad(unit, ts, column)
            ingest.bad_readings.clear()

    def active_alarms(self, unit: str) -> set[str]:
        """Names (:func:`alarm_key`) of the unit's active alarms, flood-held ones included."""
        book = self._alarms
        kinds = book.active_kinds(unit)
        return {alarm_key(k, s) for k in kinds for s in book.active_subjects(unit, k)}

    @property
    def steps_ready(self) -> bool:
        """A message completed a step that the next ``tick`` will score."""
        return self._aligner.steps_ready

    def tick(self, now: float) -> TickResult:
        """Close due steps, score them in one batch, run the alarms (all three stages)."""
        return self.finish(self.prepare(now))  # finish runs the models when nobody has

    def prepare(self, now: float) -> ScoreJob:
        """Stage 1: close the steps due at ``now``, append them to their units' windows and
        collect the windows due for scoring (run them with :func:`run_models`, then hand
        the job to :meth:`finish`; jobs must be finished in the order they were prepared)."""
        self._flush_counters()
        self.lost.flush()
        closed = self._aligner.close_due(now)
        if closed:
            outcomes, batch_rows, windows = self._advance_windows(closed)
        else:
            outcomes, batch_rows = [], []
            windows = np.empty((0, self.window, len(self.sensors)), dtype=np.float32)
        return ScoreJob(now, closed, outcomes, batch_rows, windows, self._model_set, self._health)

    def finish(self, job: ScoreJob, done: float | None = None) -> TickResult:
        """Stage 3: apply the job's scores and run the alarms. ``done`` is when scoring
        finished (the latency metric's end; default: the job's own ``now``)."""
        run_models(job)  # a no-op when it has been run (the daemon runs it in a thread)
        result = TickResult()
        if job.has_windows:
            self._apply_scores(job, job.now if done is None else done)
        for outcome, step in zip(job.outcomes, job.closed, strict=True):
            self._step_alarms.run(outcome, step, result.alerts)
        result.steps = job.outcomes
        # A unit that went quiet still gets its flood summary, once no step of the window
        # can arrive any more: judged on the unit's own event clock, because a window is in
        # data time (on the agent's clock, data that lags it would close every window at
        # once and the guard would hold nothing back).
        late = self.step_seconds + self._lateness
        for unit in self._alarms.flood_units():
            horizon = self._aligner.unit_clock(unit, job.now) - late
            summary = self._alarms.end_flood_window(unit, horizon)
            if summary is not None:
                alarms = self._step_alarms
                result.alerts.append(alarms.readable(alarms.flood_alert(summary)))
        self.metrics.units_tracked.set(self._aligner.n_units)
        return result

    def reconfigure(self, settings: AgentSettings, model_set: ModelSet) -> ReloadReport:
        """The one reload path (SIGHUP): adopt ``model_set`` and every reloadable key of
        ``settings``; windows and alarms carry over. Every other changed key is refused, with
        the reason, in the returned report (and logged), never silently ignored.

        Raises ManifestError, changing nothing, for a set with another sensor list, window or
        step period: the buffered windows would no longer mean what the new models expect.
        """
        m = model_set.manifest
        if m.sensor_names != self.sensors:
            raise ManifestError(
                f"new model set has sensors {m.sensor_names}, the running one {self.sensors}"
            )
        if m.window != self.window:
            raise ManifestError(f"new model set has window {m.window}, running {self.window}")
        if self.settings.align.step_seconds is None and m.step_seconds != self.step_seconds:
            raise ManifestError(
                f"new model set has step_seconds {m.step_seconds}, running {self.step_seconds}"
            )
        report = ReloadReport()
        for key in changed_keys(self.settings, settings):
            if key in RELOADABLE_KEYS:
                report.applied.append(key)
            else:
                report.refused[key] = RESTART_REASON
        self.settings = self.settings.model_copy(update={"models": settings.models})
        self._stride = settings.models.stride
        old = self._model_set.version
        self._model_set = model_set
        self._ingest.set_sensors([s.to_spec() for s in m.sensors])
        self._set_envelope(m.sensors)
        self._publish_model_info()
        self.log.info("model_set_swapped", old=old, new=model_set.version, applied=report.applied)
        if report.refused:
            self.log.warning(
                "configuration changes take effect on restart",
                keys=sorted(report.refused),
                reason=RESTART_REASON,
            )
        return report

    def scores_payload(self, step: StepOutcome) -> bytes:
        """The JSON scores message of one step, for the scores topic."""
        return Scores(
            plant=self._plant,
            unit=step.unit,
            ts=rfc3339(step.ts),
            score=step.score,
            decision=step.decision,
            models=step.models,
            top_sensors=step.top_sensors,
            stale=step.stale,
            alarms=dict(step.alarms),
            model_set_version=step.model_set_version or self._model_set.version,
            agent_id=self._agent_id,
        ).to_json()

    def flush_metrics(self) -> None:
        """Push the batched hot-path counters to Prometheus (``tick`` does this too)."""
        self._flush_counters()
        self._aligner.flush_metrics()

    # -- tick stages -----------------------------------------------------------------------

    def _set_envelope(self, sensors: Sequence[Any]) -> None:
        specs = [s.to_spec() for s in sensors]
        self._health = SensorHealth(specs, self._model_set.manifest.features.rolling)
        self._engineering_units = {s.name: s.unit for s in self._model_set.manifest.sensors}
        self._envelope = Envelope(specs)

    def _flush_counters(self) -> None:
        # Counter.inc takes a lock (~1 µs): per-message counts are batched here instead.
        if self._n_received:
            self.metrics.messages_received.inc(self._n_received)
            self._n_received = 0
        if self._n_messages_accepted:
            self.metrics.messages_accepted.inc(self._n_messages_accepted)
            self._n_messages_accepted = 0
        if self._n_accepted:
            self.metrics.readings_accepted.inc(self._n_accepted)
            self._n_accepted = 0

    def _advance_windows(
        self, closed: list[ClosedStep]
    ) -> tuple[list[StepOutcome], list[int], NDArray[np.float32]]:
        """Append each closed step to its unit's window; pick the windows due for scoring."""
        windows = np.empty((len(closed), self.window, len(self.sensors)), dtype=np.float32)
        batch_rows: list[int] = []
        outcomes: list[StepOutcome] = []
        names = self.sensors
        dropped = {"warmup": 0, "stride": 0}
        excursions = self._envelope.excursions(np.stack([step.row for step in closed]))
        for step in closed:
            state = self._units.get(step.unit)
            if state is None:
                state = self._units[step.unit] = _UnitState(self.window, len(names))
            not_scored: Literal["warmup", "stride", "stale"] | None = None
            if step.stale:
                # A window across missing data would be scored as the anomaly it is not.
                state.buffer.clear()
                state.since_full = 0
                not_scored = "stale"
            else:
                state.buffer.append(step.row)
                if not state.buffer.full:
                    not_scored = "warmup"
                else:
                    state.since_full += 1
                    if (state.since_full - 1) % self._stride:
                        not_scored = "stride"
            if not_scored is None:
                windows[len(batch_rows)] = state.buffer.view()
                batch_rows.append(len(outcomes))
            elif not_scored != "stale":  # stale steps are counted by the aligner
                dropped[not_scored] += 1
            quality = dict.fromkeys([names[i] for i in step.bad], "impossible")
            if self._health.enabled and not step.stale:
                for c in self._health.frozen(step.unit, step.row, step.carried):
                    quality.setdefault(names[c], "frozen")
            outcomes.append(
                StepOutcome(
                    unit=step.unit,
                    ts=step.ts,
                    index=step.index,
                    how=step.how,
                    not_scored=not_scored,
                    quality=quality,
                    stale_sensors=tuple([names[i] for i in step.stale]) if step.stale else (),
                    carried=tuple([names[i] for i in step.carried]) if step.carried else (),
                    bad_sensors=tuple([names[i] for i in step.bad]) if step.bad else (),
                    outside_envelope=excursions[len(outcomes)],
                    last_received=step.last_received,
                    last_ts=step.last_ts,
                    sensor_names=names,
                    top_k=self._top_k,
                    row=step.row,
                )
            )
        for reason, n in dropped.items():
            if n:
                self._dropped[reason].inc(n)
        return outcomes, batch_rows, windows[: len(batch_rows)]

    def _apply_scores(self, job: ScoreJob, done: float) -> None:
        """Copy each window's verdicts onto its step; observe the scoring metrics."""
        m = self.metrics
        m.steps_scored.inc(len(job.batch_rows))
        entries = job.model_set.manifest.models
        version = job.model_set.version
        names = self.sensors
        latency = m.reading_to_score_seconds
        age = m.reading_age_at_score_seconds
        noisy = job.noisy
        offset = 0
        for scores in job.scored:
            n = len(scores.votes.ensemble_score)
            for name, seconds in scores.seconds.items():
                m.inference_seconds.labels(name).observe(seconds)
            m.batch_size.observe(n)
            per_model = [
                (name, scores.scores[name].tolist(), entries[name].threshold, decisions.tolist())
                for name, decisions in scores.votes.decisions.items()
            ]
            ens_score = scores.votes.ensemble_score.tolist()
            ens_strength = scores.votes.strength.tolist()
            ens_decision = scores.votes.ensemble_decision.tolist()
            errors = scores.per_sensor
            for j in range(n):
                o = job.outcomes[job.batch_rows[offset + j]]
                if noisy is not None and noisy[offset + j].any():
                    for c in np.flatnonzero(noisy[offset + j]):
                        o.quality.setdefault(names[c], "noisy")
                o.models = {
                    name: ModelVerdict(s[j], threshold, d[j]) for name, s, threshold, d in per_model
                }
                o.score = ens_score[j]
                o.strength = ens_strength[j]
                o.decision = ens_decision[j]
                o.model_set_version = version
                if errors is not None:
                    o.sensor_error = errors[j]
                if o.last_received is not None:
                    latency.observe(max(0.0, done - o.last_received))
                if o.last_ts is not None:
                    age.observe(max(0.0, done - o.last_ts))
            offset += n

    def _publish_model_info(self) -> None:
        m = self._model_set.manifest
        self.metrics.model_set.info(
            {
                "version": m.model_set_version,
                "models": ",".join(m.models),
                "window": str(m.window),
                "step_seconds": str(self.step_seconds),
                "sensors": str(len(m.sensors)),
                **{k: "" if v is None else str(v) for k, v in m.trace.items()},
            }
        )
