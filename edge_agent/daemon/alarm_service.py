"""The alarm lifecycle inside the running agent: topics, commands, replies, metrics, logs.

The server hands this the command messages, the engine's tick results and the clock; it
returns what to put in the outbox (alerts, audit events) and keeps a set of units whose
retained alarm list needs publishing. The state itself is :mod:`edge_agent.pipeline.lifecycle`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

from edge_agent.config import AgentSettings
from edge_agent.daemon.alarm_store import AlarmStore
from edge_agent.daemon.outbox import AlertMeta, OutgoingAlert
from edge_agent.logging_setup import get_logger
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alarm_kpi import AlarmKpis
from edge_agent.pipeline.alarm_rules import CommandRefused
from edge_agent.pipeline.alerts import Alert
from edge_agent.pipeline.commands import (
    COMMANDS,
    AlarmReply,
    CommandError,
    parse_command,
    peek,
)
from edge_agent.pipeline.engine import Engine, TickResult
from edge_agent.pipeline.ingest import _template_regex
from edge_agent.pipeline.lifecycle import AlarmLifecycle
from edge_agent.topics import fill

#: A refused command is logged at most this often per reason (all are counted).
REFUSAL_LOG_SECONDS = 10.0
#: The KPI gauges are refreshed this often (and after every command).
KPI_SECONDS = 2.0


@dataclass(slots=True)
class CommandOutcome:
    reply_topic: str
    reply: bytes
    #: For the outbox: the audit event and any released alerts.
    alerts: list[OutgoingAlert] = field(default_factory=list)


class AlarmService:
    def __init__(
        self,
        settings: AgentSettings,
        engine: Engine,
        metrics: Metrics,
        *,
        persistent: bool = True,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.log = get_logger(component="alarms", agent_id=settings.agent_id)
        self.store = AlarmStore(settings.alarm_store_path, metrics) if persistent else None
        self.lifecycle = AlarmLifecycle(
            settings,
            engine.sensors,
            lambda: self.engine.model_set.version,
            store=self.store,
            kpis=AlarmKpis(settings.alarm.flood_max),
        )
        if self.store is not None:
            entries, oos = self.store.load()
            self.lifecycle.restore(entries, oos)
            if entries or oos:
                self.log.info("alarm_state_restored", alarms=len(entries), out_of_service=len(oos))
        self.lifecycle.changed.update(self.lifecycle.units)
        self._command_rx = _template_regex(settings.topics.alarm_command, settings.plant, ("unit",))
        self._refusals_logged: dict[str, float] = {}
        self._refusals_quiet: dict[str, int] = {}
        self._kpis_due = 0.0

    # -- commands --------------------------------------------------------------------------

    def is_command(self, topic: str) -> bool:
        return self._command_rx.fullmatch(topic) is not None

    def refuse_retained(self, topic: str) -> bool:
        """A retained message on a command topic is dropped (counted, logged): an old command
        must not run again at every reconnect. False for any other topic."""
        m = self._command_rx.fullmatch(topic)
        if m is None:
            return False
        self._refused("retained", "retained commands are ignored", m.group("unit"), None, None)
        return True

    def handle_command(self, topic: str, payload: bytes, now: float) -> CommandOutcome | None:
        """Apply one command message; never raises. None if the topic is not a command topic."""
        m = self._command_rx.fullmatch(topic)
        if m is None:
            return None
        unit = m.group("unit")
        reply_topic = self._topic(self.settings.topics.alarm_reply, unit)
        request_id, command_name, alarm = peek(payload)
        try:
            if len(payload) > self.settings.ingest.max_payload_bytes:
                raise CommandError("schema", "payload too large")
            cmd = parse_command(payload)
            request_id, command_name = cmd.request_id, cmd.command
            alarm = getattr(cmd, "alarm", None)
            result = self.lifecycle.command(unit, cmd, now)
        except (CommandError, CommandRefused) as exc:
            self._refused(exc.code, exc.reason, unit, command_name, request_id)
            return CommandOutcome(
                reply_topic,
                AlarmReply(
                    request_id=request_id, command=command_name, alarm=alarm, ok=False,
                    ts=now, reason=exc.reason,
                ).to_json(),
            )  # fmt: skip
        self.metrics.alarm_commands.labels(cmd.command, "accepted").inc()
        self.log.info(
            "alarm_command",
            unit=unit,
            command=cmd.command,
            alarm=result.alarm,
            sensor=getattr(cmd, "sensor", None),
            operator=cmd.operator,
            comment=cmd.comment,
            request_id=cmd.request_id,
        )
        return CommandOutcome(
            reply_topic,
            AlarmReply(
                request_id=request_id, command=cmd.command, alarm=result.alarm, ok=True, ts=now
            ).to_json(),
            [self._out(a) for a in result.alerts],
        )

    def _refused(
        self, code: str, reason: str, unit: str, command: str | None, request_id: str | None
    ) -> None:
        label = command if command in _COMMAND_LABELS else "invalid"
        self.metrics.alarm_commands.labels(label, "refused").inc()
        self.metrics.alarm_commands_refused.labels(code).inc()
        mono = time.monotonic()
        if mono - self._refusals_logged.get(code, float("-inf")) < REFUSAL_LOG_SECONDS:
            self._refusals_quiet[code] = self._refusals_quiet.get(code, 0) + 1
            return
        self._refusals_logged[code] = mono
        self.log.warning(
            "alarm_command_refused",
            code=code,
            reason=reason,
            unit=unit,
            command=command,
            request_id=request_id,
            not_logged_since_last=self._refusals_quiet.pop(code, 0),
        )

    # -- engine results and time -------------------------------------------------------------

    def process_tick(self, result: TickResult, now: float) -> list[OutgoingAlert]:
        """The tick's alerts through the lifecycle: what to publish, in order."""
        lc = self.lifecycle
        out: list[Alert] = []
        n_step_alerts = 0
        for step in result.steps:
            out.extend(lc.observe_step(step.unit, step.row, step.scored, now))
            for alert in step.alerts:
                out.extend(lc.on_alert(alert, now))
            n_step_alerts += len(step.alerts)
            lc.confirm_restored(step.unit, partial(self.engine.active_alarms, step.unit))
        for alert in result.alerts[n_step_alerts:]:  # flood summaries of quiet units
            out.extend(lc.on_alert(alert, now))
        return [self._out(a) for a in out]

    def housekeeping(self, now: float) -> list[OutgoingAlert]:
        """Expire shelves and refresh the KPI gauges; returns audit events to publish."""
        out = [self._out(a) for a in self.lifecycle.expire(now)]
        if out or self.lifecycle.changed or now >= self._kpis_due:
            self._update_metrics(now)
            self._kpis_due = now + KPI_SECONDS
        return out

    def take_changed(self, now: float) -> list[tuple[str, str, bytes]]:
        """(unit, topic, payload) of every retained list to (re)publish now."""
        lc = self.lifecycle
        units, lc.changed = sorted(lc.changed), set()
        return [
            (u, self._topic(self.settings.topics.alarms, u), lc.snapshot(u, now).to_json())
            for u in units
        ]

    def mark_all_changed(self) -> None:
        self.lifecycle.changed.update(self.lifecycle.units)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    # -- helpers -----------------------------------------------------------------------------

    def _update_metrics(self, now: float) -> None:
        m, lc = self.metrics, self.lifecycle
        by_unit = lc.entries_by_unit()
        for unit in lc.units:
            entries = by_unit.get(unit, [])
            k = lc.kpis.values(unit, now, [e.raised_at for e in entries if e.active])
            m.alarm_rate_10min.labels(unit).set(k.rate_10min)
            m.alarms_chattering.labels(unit).set(k.chattering)
            m.alarms_standing.labels(unit).set(k.standing)
            m.alarm_flood_periods.labels(unit).set(k.flood_periods)
            m.alarm_flood_active.labels(unit).set(int(k.in_flood))
            m.alarms_shelved.labels(unit).set(sum(e.shelved is not None for e in entries))
            marks = lc.out_of_service_marks(unit)
            m.alarms_out_of_service.labels(unit, "unit").set(int("" in marks))
            m.alarms_out_of_service.labels(unit, "sensors").set(len(marks - {""}))
            for state in ("unack_active", "ack_active", "unack_rtn"):
                m.alarms_listed.labels(unit, state).set(sum(e.state == state for e in entries))

    def _out(self, alert: Alert) -> OutgoingAlert:
        topic = self._topic(self.settings.topics.alerts, alert.unit)
        return OutgoingAlert(topic, alert.to_json(), AlertMeta.of(alert))

    def _topic(self, template: str, unit: str) -> str:
        s = self.settings
        return fill(template, plant=s.plant, unit=unit, agent_id=s.agent_id)


_COMMAND_LABELS = set(COMMANDS)
