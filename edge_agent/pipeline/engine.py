"""The engine: the agent's whole data path, from raw MQTT payloads to alerts, without I/O.

``handle_message`` does the little per-message work there is (validate, file under a
step); ``tick(now)`` does the batch work: close due steps, append them to each unit's
window, score every window that is due in *one* onnxruntime batch, run the alarms. Both
take the time as an argument, so the live agent (wall clock) and ``replay`` (the data's
own clock) run exactly this code. The caller publishes what ``tick`` returns.

Times are Unix seconds: ``received`` and ``now`` must come from the same clock as the
readings' timestamps (``time.time()``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import structlog
from numpy.typing import NDArray

from edge_agent.config import AgentSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alarm import (
    LIMIT_SEVERITY,
    AlarmBook,
    AlarmEvent,
    FloodSummary,
    alarm_key,
    anomaly_severity,
)
from edge_agent.pipeline.alerts import (
    Alert,
    AlertKind,
    EnvelopeExcursion,
    FloodDetail,
    LimitBreach,
    ModelVerdict,
    Scores,
    SensorError,
    Severity,
    rfc3339,
)
from edge_agent.pipeline.align import Aligner, ClosedStep
from edge_agent.pipeline.ingest import EventLogger, Ingestor
from edge_agent.pipeline.limits import LEVEL_RANK, compile_limits
from edge_agent.pipeline.lost_data import LostDataWarnings
from edge_agent.pipeline.manifest import ManifestError
from edge_agent.pipeline.messages import with_message
from edge_agent.pipeline.reconfigure import (
    RELOADABLE_KEYS,
    RESTART_REASON,
    ReloadReport,
    changed_keys,
)
from edge_agent.pipeline.scoring import BatchScores, ModelSet
from edge_agent.pipeline.sensor_health import SensorHealth
from edge_agent.pipeline.windows import RingBuffer

#: Alarm kinds reported per step (``flood`` is per window, not per step).
STEP_ALARM_KINDS: tuple[AlertKind, ...] = ("anomaly", "limit", "sensor_stale", "bad_quality")
#: Severity of a bad-quality alarm: the sensor's readings are impossible, so neither its
#: limit alarms nor the models' view of it can be trusted until it is fixed.
BAD_QUALITY_SEVERITY: Severity = "medium"
#: The alarm states of a unit without any active alarm (shared, read-only: the common case).
_ALL_CLEAR: Mapping[str, bool] = MappingProxyType(dict.fromkeys(STEP_ALARM_KINDS, False))


#: Most windows scored in one onnxruntime call.
MAX_SCORE_BATCH = 128


@dataclass(slots=True)
class StepOutcome:
    """What happened at one closed step of one unit."""

    unit: str
    #: Start of the step, Unix seconds.
    ts: float
    index: int
    #: How the step closed: ``complete``, ``deadline`` or ``overflow``.
    how: str
    #: Why the step was not scored: ``warmup`` (window not full yet), ``stride`` or
    #: ``stale``; None when it was scored.
    not_scored: Literal["warmup", "stride", "stale"] | None
    stale_sensors: tuple[str, ...] = ()
    carried: tuple[str, ...] = ()
    #: Sensors whose latest reading was impossible (rejected at ingest).
    bad_sensors: tuple[str, ...] = ()
    #: Sensors whose readings are not trusted at this step, with the reason
    #: (``impossible``, ``frozen``, ``noisy``: see :mod:`edge_agent.pipeline.sensor_health`).
    quality: dict[str, str] = field(default_factory=dict)
    #: Sensors outside their training envelope at this step (scored all the same).
    outside_envelope: tuple[EnvelopeExcursion, ...] = ()
    models: dict[str, ModelVerdict] = field(default_factory=dict)
    score: float | None = None
    decision: bool | None = None
    #: How far past the threshold (see ``ensemble.Votes.strength``): the alert's severity.
    strength: float | None = None
    #: Per-sensor reconstruction error (None when not scored or no model reports one).
    sensor_error: NDArray[np.float32] | None = None
    #: Alarm kind -> active after this step.
    alarms: Mapping[str, bool] = field(default_factory=dict)
    #: Alerts published at this step (flood-suppressed ones are not here).
    alerts: list[Alert] = field(default_factory=list)
    last_received: float | None = None
    sensor_names: Sequence[str] = ()
    top_k: int = 3
    #: The step's values in ``sensor_names`` order (NaN = missing), for the alarm lifecycle's
    #: suppression by design.
    row: NDArray[np.float32] | None = None

    @property
    def top_sensors(self) -> tuple[SensorError, ...]:
        """The ``top_k`` sensors with the largest error, largest first (computed on demand:
        most steps are never looked at that closely)."""
        err = self.sensor_error
        if err is None:
            return ()
        order = np.argsort(-err, kind="stable")[: self.top_k]
        return tuple(SensorError(self.sensor_names[c], float(err[c])) for c in order)

    @property
    def scored(self) -> bool:
        return self.not_scored is None

    @property
    def stale(self) -> bool:
        return bool(self.stale_sensors)


@dataclass(slots=True)
class TickResult:
    steps: list[StepOutcome] = field(default_factory=list)
    #: Every alert to publish, in order (the steps' alerts plus flood summaries).
    alerts: list[Alert] = field(default_factory=list)


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
        self._limits = compile_limits(settings, self.sensors)
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
        return len(self._aligner.units)

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
        """Close due steps, score them in one batch, run the alarms."""
        self._flush_counters()
        self.lost.flush()
        closed = self._aligner.close_due(now)
        result = TickResult()
        if closed:
            outcomes, batch_rows, windows = self._advance_windows(closed)
            if batch_rows:
                self._score(now, outcomes, batch_rows, windows)
            for outcome, step in zip(outcomes, closed, strict=True):
                self._run_alarms(outcome, step, result.alerts)
            result.steps = outcomes
        # A unit that went quiet still gets its flood summary, once no step of the window
        # can arrive any more.
        horizon = now - self.step_seconds - self._lateness
        for unit in self._alarms.flood_units():
            summary = self._alarms.end_flood_window(unit, horizon)
            if summary is not None:
                result.alerts.append(self._readable(self._flood_alert(summary)))
        self.metrics.units_tracked.set(len(self._aligner.units))
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
            model_set_version=self._model_set.version,
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
        self._env_lo = np.array([s.envelope_lo for s in specs], dtype=np.float32)
        self._env_hi = np.array([s.envelope_hi for s in specs], dtype=np.float32)
        self._env_bounds = [
            (
                None if not np.isfinite(s.envelope_lo) else s.envelope_lo,
                None if not np.isfinite(s.envelope_hi) else s.envelope_hi,
            )
            for s in specs
        ]

    def _excursions(self, row: NDArray[np.float32]) -> tuple[EnvelopeExcursion, ...]:
        """Sensors of one step outside the training envelope (NaN: stale, not outside)."""
        outside = (row < self._env_lo) | (row > self._env_hi)
        if not outside.any():
            return ()
        names = self.sensors
        return tuple(
            EnvelopeExcursion(names[c], float(row[c]), *self._env_bounds[c])
            for c in np.flatnonzero(outside)
        )

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
                    outside_envelope=self._excursions(step.row),
                    last_received=step.last_received,
                    sensor_names=names,
                    top_k=self._top_k,
                    row=step.row,
                )
            )
        for reason, n in dropped.items():
            if n:
                self._dropped[reason].inc(n)
        return outcomes, batch_rows, windows[: len(batch_rows)]

    def _score(
        self,
        now: float,
        outcomes: list[StepOutcome],
        batch_rows: list[int],
        windows: NDArray[np.float32],
    ) -> None:
        # Bounded batches: the cost per window is flat from ~16 windows up, while one huge
        # batch (a backlog after an outage) would spike memory that glibc then keeps.
        for start in range(0, len(batch_rows), MAX_SCORE_BATCH):
            stop = start + MAX_SCORE_BATCH
            self._score_batch(now, outcomes, batch_rows[start:stop], windows[start:stop])

    def _score_batch(
        self,
        now: float,
        outcomes: list[StepOutcome],
        batch_rows: list[int],
        windows: NDArray[np.float32],
    ) -> None:
        model_set = self._model_set
        scores: BatchScores = model_set.score(windows)
        m = self.metrics
        for name, seconds in scores.seconds.items():
            m.inference_seconds.labels(name).observe(seconds)
        m.batch_size.observe(len(batch_rows))
        m.steps_scored.inc(len(batch_rows))
        entries = model_set.manifest.models
        per_model = [
            (name, scores.scores[name].tolist(), entries[name].threshold, decisions.tolist())
            for name, decisions in scores.votes.decisions.items()
        ]
        ens_score = scores.votes.ensemble_score.tolist()
        ens_strength = scores.votes.strength.tolist()
        ens_decision = scores.votes.ensemble_decision.tolist()
        errors = scores.per_sensor
        latency = m.reading_to_score_seconds
        noisy = self._health.noisy(windows) if self._health.enabled else None
        names = self.sensors
        for j, row in enumerate(batch_rows):
            o = outcomes[row]
            if noisy is not None and noisy[j].any():
                for c in np.flatnonzero(noisy[j]):
                    o.quality.setdefault(names[c], "noisy")
            o.models = {
                name: ModelVerdict(s[j], threshold, d[j]) for name, s, threshold, d in per_model
            }
            o.score = ens_score[j]
            o.strength = ens_strength[j]
            o.decision = ens_decision[j]
            if errors is not None:
                o.sensor_error = errors[j]
            if o.last_received is not None:
                latency.observe(max(0.0, now - o.last_received))

    def _run_alarms(self, o: StepOutcome, step: ClosedStep, alerts: list[Alert]) -> None:
        book = self._alarms
        summary = book.end_flood_window(o.unit, o.ts)
        if summary is not None:
            o.alerts.append(self._flood_alert(summary))
        if o.decision is not None and o.strength is not None:
            severity = anomaly_severity(o.strength)
            event = book.update(o.unit, "anomaly", "", o.decision, o.ts, severity)
            if event is not None:
                self._emit(event, o, None)
        for limit in self._limits.get(o.unit, ()):
            value = float(step.row[limit.column])
            if value != value:  # NaN: stale sensor, no decision
                continue
            level = limit.level(value)
            event = book.update(
                o.unit,
                "limit",
                limit.sensor,
                level is not None,
                o.ts,
                LIMIT_SEVERITY[level] if level is not None else "low",
                level,
                LEVEL_RANK[level] if level is not None else 0,
            )
            if event is not None and event.level is not None:
                bound = limit.bound(event.level)
                self._emit(event, o, LimitBreach(limit.sensor, event.level, bound, value))  # type: ignore[arg-type]
        event = book.update(o.unit, "sensor_stale", "", o.stale, o.ts, "low")
        if event is not None:
            self._emit(event, o, None)
        if o.quality or book.is_active(o.unit, "bad_quality"):
            self._bad_quality_alarms(o)
        active = book.active_kinds(o.unit)
        o.alarms = (
            {kind: active.get(kind, 0) > 0 for kind in STEP_ALARM_KINDS} if active else _ALL_CLEAR
        )
        if o.alerts:
            o.alerts[:] = [self._readable(a) for a in o.alerts]
            alerts.extend(o.alerts)

    def _bad_quality_alarms(self, o: StepOutcome) -> None:
        """One alarm per sensor whose readings are impossible, frozen or noisy, fed every
        step while it is or its alarm is active (so it clears after ``off_delay`` good
        steps)."""
        book = self._alarms
        subjects = dict.fromkeys((*o.quality, *book.active_subjects(o.unit, "bad_quality")))
        for sensor in subjects:
            event = book.update(
                o.unit, "bad_quality", sensor, sensor in o.quality, o.ts, BAD_QUALITY_SEVERITY
            )
            if event is not None:
                self._emit(event, o, None, sensor=sensor, quality=o.quality.get(sensor))

    def _emit(
        self,
        event: AlarmEvent,
        o: StepOutcome,
        breach: LimitBreach | None,
        sensor: str | None = None,
        quality: str | None = None,
    ) -> None:
        log_fields: dict[str, Any] = {
            "unit": event.unit,
            "kind": event.kind,
            "subject": event.subject,
            "alert_id": event.alert_id,
            "ts": o.ts,
        }
        if not event.publish:
            if event.state == "raised" and not event.level_change:
                self.log.info("alert_suppressed", **log_fields)
            return
        if event.level is not None:
            log_fields["level"] = event.level
        name = "alert_level_changed" if event.level_change else f"alert_{event.state}"
        self.log.info(name, severity=event.severity, **log_fields)
        kind: AlertKind = event.kind  # type: ignore[assignment]
        o.alerts.append(
            Alert(
                alert_id=event.alert_id,
                plant=self._plant,
                unit=event.unit,
                kind=kind,
                state=event.state,
                severity=event.severity,
                ts=event.ts,
                raised_at=event.raised_ts,
                model_set_version=self._model_set.version,
                agent_id=self._agent_id,
                score=o.score,
                models=o.models,
                top_sensors=o.top_sensors,
                limit=breach,
                stale_sensors=o.stale_sensors,
                sensor=breach.sensor if breach is not None else sensor,
                outside_envelope=o.outside_envelope,
                quality=quality,
                arrival=o.last_received,
                alarm=alarm_key(event.kind, event.subject),
            )
        )

    def _flood_alert(self, s: FloodSummary) -> Alert:
        self.log.warning(
            "alert_flood",
            unit=s.unit,
            suppressed=s.suppressed,
            by_kind=s.by_kind,
            window_start=s.window_start,
        )
        return Alert(
            alert_id=s.alert_id,
            plant=self._plant,
            unit=s.unit,
            kind="flood",
            state="summary",
            severity=s.severity,
            ts=s.window_end,
            raised_at=s.window_start,
            model_set_version=self._model_set.version,
            agent_id=self._agent_id,
            flood=FloodDetail(s.suppressed, s.by_kind, s.window_start, s.window_end),
        )

    def _readable(self, alert: Alert) -> Alert:
        """The alert with its plain-text message and engineering units."""
        units = {e.name: e.unit for e in self._model_set.manifest.sensors}
        return with_message(alert, units)

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
