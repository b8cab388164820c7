"""The alarm lifecycle (ISA-18.2 / IEC 62682): what the operator sees and does with an alarm.

The engine's alarm book decides *when* an alarm is active (on/off delays). This module keeps,
per alarm (unit + :func:`edge_agent.pipeline.alarm.alarm_key`), the state an operator works with::

                 raise                          acknowledge
    normal ─────────────────▶ unack_active ─────────────────▶ ack_active
      ▲                            │ clear                        │ clear
      │ acknowledge                ▼                              │
      └──────────────────────  unack_rtn                          │
      ▲                                                           │
      └───────────────────────────────────────────────────────────┘

    a raise in unack_rtn starts a new episode (unack_active, new alert_id)

On top of that, three ways to keep an alarm from being *annunciated* (its ``raised`` alert
not published) while it keeps its state:

* **shelved** by an operator, for a duration (default and maximum from the config) or
  one-shot (until the alarm next clears); a shelve ends by itself (``shelve_expired``);
* **suppressed by design** while the unit's own reading (e.g. ``load``) says it is offline
  or starting up: alarms of the configured kinds, except limit alarms of safety sensors;
* **out of service**: the whole unit or one sensor, during maintenance.

A raise that comes while the alarm is hidden is held; if the alarm is still active when it
stops being hidden, the held alert is published then. A clear is published exactly when its
raise was, so subscribers always see raise/clear pairs. An alarm that was never annunciated
needs no acknowledgement.

Pure and clock-injected like the engine: every method takes ``now`` (Unix seconds) and
returns the alerts to publish; persistence goes through a :class:`StateStore`.

One class, the whole state machine (a little over 400 lines): its transitions and the guards
that suppress annunciation read together; the rules and audit events are in
:mod:`edge_agent.pipeline.alarm_rules`, the stored state in :mod:`edge_agent.pipeline.alarm_state`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import AgentSettings, ConfigError
from edge_agent.pipeline.alarm import alert_id
from edge_agent.pipeline.alarm_kpi import AlarmKpis
from edge_agent.pipeline.alarm_rules import (
    AuditEvents,
    CommandRefused,
    CommandResult,
    check_alarm_name,
    suppression_problems,
)
from edge_agent.pipeline.alarm_state import (
    AlarmEntry,
    AlarmList,
    MemoryStore,
    OutOfServiceMarks,
    Shelve,
    StateStore,
    describe,
)
from edge_agent.pipeline.alerts import (
    SEVERITIES,
    Alert,
    AlertKind,
    AlertState,
    AuditDetail,
)
from edge_agent.pipeline.commands import Command, OutOfServiceCommand, ShelveCommand


class AlarmLifecycle:
    """Lifecycle state of every alarm of every unit of one agent (see the module docstring)."""

    def __init__(
        self,
        settings: AgentSettings,
        sensors: Sequence[str],
        model_set_version: Callable[[], str],
        store: StateStore | None = None,
        kpis: AlarmKpis | None = None,
    ) -> None:
        self._plant = settings.plant
        self._agent_id = settings.agent_id
        self._sensors = list(sensors)
        self._limit_sensors = {u.name: set(u.limits) for u in settings.units}
        self._configured_units = [u.name for u in settings.units]
        self._shelve_default = settings.alarm.shelve_default_seconds
        self._shelve_max = settings.alarm.shelve_max_seconds
        self._restore_steps = settings.alarm.on_delay + 1
        sup = settings.suppression
        problems = suppression_problems(settings, self._sensors)
        if problems:
            raise ConfigError(problems)
        self._sup_column = None if sup.sensor is None else self._sensors.index(sup.sensor)
        self._sup_below = sup.below
        self._sup_kinds = set(sup.kinds)
        self._safety = set(sup.safety_sensors)
        self._audit_event = AuditEvents(settings.plant, settings.agent_id, model_set_version)
        self._store: StateStore = store if store is not None else MemoryStore()
        self.kpis = kpis if kpis is not None else AlarmKpis()
        self._entries: dict[tuple[str, str], AlarmEntry] = {}
        #: unit -> out-of-service sensors; "" = the whole unit.
        self._oos: dict[str, set[str]] = {}
        self._suppressed: set[str] = set()
        #: unit -> (closed steps, scored steps) since start, for confirming restored alarms.
        self._steps: dict[str, list[int]] = {}
        #: Units whose retained list must be republished.
        self.changed: set[str] = set()
        #: Units with restored alarms still to confirm (keeps the per-step check O(1)).
        self._unconfirmed: set[str] = set()

    # -- restore ---------------------------------------------------------------------------

    def restore(self, entries: Iterable[AlarmEntry], oos: Iterable[tuple[str, str]]) -> None:
        """Adopt the states saved before a restart (alarms unconfirmed until the data says)."""
        for e in entries:
            e.restored = e.active
            if e.restored:
                self._unconfirmed.add(e.unit)
            self._entries[(e.unit, e.alarm)] = e
            self.changed.add(e.unit)
        for unit, sensor in oos:
            self._oos.setdefault(unit, set()).add(sensor)
            self.changed.add(unit)

    @property
    def units(self) -> list[str]:
        """Units with a retained list: configured ones plus any with lifecycle state."""
        seen = dict.fromkeys(self._configured_units)
        seen.update(dict.fromkeys(u for u, _ in self._entries))
        seen.update(dict.fromkeys(self._oos))
        return list(seen)

    # -- engine side -----------------------------------------------------------------------

    def observe_step(
        self, unit: str, row: Sequence[float] | NDArray[np.float32] | None, scored: bool, now: float
    ) -> list[Alert]:
        """Once per closed step, before its alerts: suppression by design from the row."""
        counts = self._steps.setdefault(unit, [0, 0])
        counts[0] += 1
        counts[1] += scored
        if self._sup_column is None or row is None or self._sup_below is None:
            return []
        value = float(row[self._sup_column])
        if value != value:  # missing: the operating state is unknown, keep it
            return []
        low = value < self._sup_below
        if low == (unit in self._suppressed):
            return []
        self.changed.add(unit)
        if low:
            self._suppressed.add(unit)
            return []
        self._suppressed.discard(unit)
        return self._release(unit)

    def on_alert(self, alert: Alert, now: float) -> list[Alert]:
        """An alert from the engine; returns what to publish (nothing while held)."""
        key = alert.alarm
        if alert.flood is not None:  # the flood guard's held-back raises count for the KPIs
            self.kpis.raised(alert.unit, alert.ts, alert.flood.suppressed)
        if key is None or alert.state not in ("raised", "cleared"):
            return [alert]
        unit = alert.unit
        entry = self._entries.get((unit, key))
        self.changed.add(unit)
        if alert.state == "raised":
            self.kpis.transition(unit, key, alert.ts, raised=True)
            return self._raised(unit, key, entry, alert)
        if entry is None or alert.alert_id not in entry.episodes:
            return [alert]  # an episode the lifecycle never saw raised (e.g. lost state)
        self.kpis.transition(unit, key, alert.ts, raised=False)
        entry.episodes.discard(alert.alert_id)
        out = [alert] if entry.annunciated else []
        if entry.episodes:  # another episode of the alarm (another limit level) is still on
            return out
        entry.active = False
        if not entry.annunciated:
            entry.acknowledged, entry.held = True, None  # nobody was told: nothing to ack
        if entry.shelved is not None and entry.shelved.one_shot:
            out.append(self._end_shelve(entry, now, "shelve_expired", "one-shot: alarm cleared"))
        self._save_or_drop(entry)
        return out

    def _raised(self, unit: str, key: str, entry: AlarmEntry | None, alert: Alert) -> list[Alert]:
        if entry is not None and entry.active and (entry.restored or entry.episodes):
            # The same condition: still there after a restart, or one more engine episode
            # under the same name (a limit's next level while per-level subjects exist).
            # It stays acknowledged unless it got worse.
            worse = SEVERITIES.index(alert.severity) > SEVERITIES.index(entry.severity)
            if worse:
                entry.acknowledged = False
            if entry.restored:
                entry.restored, entry.raised_at = False, alert.raised_at
                entry.episodes.clear()
            entry.episodes.add(alert.alert_id)
            entry.alert_id = alert.alert_id
            entry.severity = max(entry.severity, alert.severity, key=SEVERITIES.index)
            entry.message = describe(alert)
            self._store.save_alarm(entry)
            if entry.annunciated:
                return [alert]
            if worse or entry.held is None:
                entry.held = alert.to_json()
            return []
        if entry is None:
            entry = self._entries[(unit, key)] = AlarmEntry(
                unit, key, alert.kind, True, False, "", alert.severity, 0.0, ""
            )
        entry.active, entry.acknowledged = True, False
        entry.alert_id, entry.raised_at = alert.alert_id, alert.raised_at
        entry.episodes = {alert.alert_id}
        entry.severity, entry.message = alert.severity, describe(alert)
        entry.sensors = self._sensors_of(alert, entry)
        entry.annunciated = not self._hidden(entry)
        entry.held = None if entry.annunciated else alert.to_json()
        self._store.save_alarm(entry)
        return [alert] if entry.annunciated else []

    def confirm_restored(self, unit: str, engine_active: Callable[[], set[str]]) -> None:
        """After a restart: restored active alarms the engine has not raised again once it had
        the data to do so returned to normal while the agent was away."""
        if unit not in self._unconfirmed:
            return
        restored = [e for (u, _), e in self._entries.items() if u == unit and e.restored]
        counts = self._steps.get(unit)
        if not restored:
            self._unconfirmed.discard(unit)
        if not restored or counts is None:
            return
        active: set[str] | None = None
        for e in restored:
            seen = counts[1] if e.kind == "anomaly" else counts[0]
            if seen < self._restore_steps:
                continue
            active = engine_active() if active is None else active
            e.restored = False
            if e.alarm in active:
                continue
            e.active = False
            self.changed.add(unit)
            self._save_or_drop(e)

    # -- commands --------------------------------------------------------------------------

    def command(self, unit: str, cmd: Command, now: float) -> CommandResult:
        """Apply an operator command; raises :class:`CommandRefused` with a clear reason."""
        if unit not in self._configured_units and unit not in self._steps:
            raise CommandRefused("wrong_unit", f"unit {unit!r} is not watched by this agent")
        if cmd.unit is not None and cmd.unit != unit:
            raise CommandRefused(
                "wrong_unit", f"payload names unit {cmd.unit!r} but was sent to unit {unit!r}"
            )
        audit = AuditDetail(cmd.operator, cmd.comment)
        if isinstance(cmd, OutOfServiceCommand):
            return self._service(unit, cmd.sensor, cmd.command == "out_of_service", audit, now)
        alarm = cmd.alarm
        check_alarm_name(unit, alarm, self._sensors, self._limit_sensors, self._entries)
        entry = self._entries.get((unit, alarm))
        self.changed.add(unit)
        if cmd.command == "acknowledge":
            if entry is None or entry.acknowledged:
                state = "normal" if entry is None else entry.state
                raise CommandRefused(
                    "not_applicable", f"alarm {alarm} is {state}: nothing to acknowledge"
                )
            entry.acknowledged = True
            event = self._audit(entry, "acknowledged", audit, now)
            self._save_or_drop(entry)
            return CommandResult(alarm, [event])
        if cmd.command == "unshelve":
            if entry is None or entry.shelved is None:
                raise CommandRefused("not_applicable", f"alarm {alarm} is not shelved")
            event = self._end_shelve(entry, now, "unshelved", audit)
            return CommandResult(alarm, [event, *self._release(unit)])
        assert isinstance(cmd, ShelveCommand)
        return CommandResult(alarm, [self._shelve(unit, alarm, entry, cmd, audit, now)])

    def _shelve(
        self,
        unit: str,
        alarm: str,
        entry: AlarmEntry | None,
        cmd: ShelveCommand,
        audit: AuditDetail,
        now: float,
    ) -> Alert:
        duration = cmd.duration_seconds
        if duration is not None and duration > self._shelve_max:
            raise CommandRefused(
                "bad_duration",
                f"duration_seconds {duration:g} exceeds the maximum of {self._shelve_max:g} "
                "(alarm.shelve_max_seconds)",
            )
        if cmd.one_shot and (entry is None or not entry.active):
            raise CommandRefused(
                "not_applicable", f"one-shot shelve needs an active alarm; {alarm} is not active"
            )
        if entry is not None and entry.shelved is not None:
            raise CommandRefused("not_applicable", f"alarm {alarm} is already shelved")
        if duration is None and not cmd.one_shot:
            duration = self._shelve_default
        if entry is None:  # shelving an alarm in its normal state (e.g. a chattering one)
            kind = alarm.split("/", 1)[0]
            subject = alarm.split("/", 1)[1] if "/" in alarm else ""
            entry = self._entries[(unit, alarm)] = AlarmEntry(
                unit, alarm, kind, False, True,
                alert_id(self._agent_id, unit, kind, subject + "\x1fshelve", now),
                "low", now, "shelved while normal", (subject,) if subject else (),
            )  # fmt: skip
        until = None if duration is None else now + duration
        entry.shelved = Shelve(cmd.operator, until, cmd.one_shot, cmd.comment, now)
        self._store.save_alarm(entry)
        return self._audit(entry, "shelved", audit, now)

    def _service(
        self, unit: str, sensor: str | None, out: bool, audit: AuditDetail, now: float
    ) -> CommandResult:
        if sensor is not None and sensor not in self._sensors:
            raise CommandRefused(
                "unknown_alarm", f"unknown sensor {sensor!r} (has {', '.join(self._sensors)})"
            )
        marks = self._oos.setdefault(unit, set())
        mark = sensor or ""
        what = f"sensor {sensor}" if sensor else f"unit {unit}"
        if out == (mark in marks):
            raise CommandRefused(
                "not_applicable", f"{what} is {'already' if out else 'not'} out of service"
            )
        (marks.add if out else marks.discard)(mark)
        self._store.save_out_of_service(unit, sensor, out)
        self.changed.add(unit)
        state: AlertState = "out_of_service" if out else "in_service"
        detail = AuditDetail(audit.operator, audit.comment, sensor)
        event = self._audit_event(
            unit, "maintenance", state, alert_id(self._agent_id, unit, "maintenance", mark, now),
            "low", now, now, None, detail,
        )  # fmt: skip
        return CommandResult(None, [event] if out else [event, *self._release(unit)])

    # -- time ------------------------------------------------------------------------------

    def expire(self, now: float) -> list[Alert]:
        """End the shelves whose time is up (``shelve_expired``) and release held alerts."""
        out: list[Alert] = []
        for entry in list(self._entries.values()):
            s = entry.shelved
            if s is not None and s.until is not None and now >= s.until:
                out.append(self._end_shelve(entry, now, "shelve_expired", "shelve time ended"))
                out.extend(self._release(entry.unit))
        return out

    # -- views -----------------------------------------------------------------------------

    def snapshot(self, unit: str, now: float) -> AlarmList:
        """The retained alarm list of one unit (the contract's document)."""
        marks = self._oos.get(unit, set())
        alarms = tuple(
            e.listed(self._suppressed_by_design(e), self._out_of_service(e))
            for (u, _), e in sorted(self._entries.items())
            if u == unit
        )
        return AlarmList(
            plant=self._plant,
            unit=unit,
            agent_id=self._agent_id,
            ts=now,
            out_of_service=OutOfServiceMarks("" in marks, tuple(sorted(marks - {""}))),
            suppressed_by_design=unit in self._suppressed,
            alarms=alarms,
        )

    def entries(self, unit: str) -> list[AlarmEntry]:
        return [e for (u, _), e in self._entries.items() if u == unit]

    def entries_by_unit(self) -> dict[str, list[AlarmEntry]]:
        out: dict[str, list[AlarmEntry]] = {}
        for (unit, _), e in self._entries.items():
            out.setdefault(unit, []).append(e)
        return out

    def out_of_service_marks(self, unit: str) -> set[str]:
        return set(self._oos.get(unit, ()))

    # -- internals -------------------------------------------------------------------------

    def _suppressed_by_design(self, e: AlarmEntry) -> bool:
        if e.unit not in self._suppressed or e.kind not in self._sup_kinds:
            return False
        return not (e.kind == "limit" and self._safety.intersection(e.sensors))

    def _out_of_service(self, e: AlarmEntry) -> bool:
        marks = self._oos.get(e.unit)
        if not marks:
            return False
        return "" in marks or (bool(e.sensors) and marks.issuperset(e.sensors))

    def _hidden(self, e: AlarmEntry) -> bool:
        return e.shelved is not None or self._suppressed_by_design(e) or self._out_of_service(e)

    def _release(self, unit: str) -> list[Alert]:
        """Publish held raises of alarms that are still active and no longer hidden."""
        out = []
        for e in self.entries(unit):
            if e.active and not e.annunciated and e.held is not None and not self._hidden(e):
                held = Alert.from_json(e.held)
                e.annunciated, e.held = True, None
                self._store.save_alarm(e)
                if held is not None:  # no arrival: its delay is the hold, not the agent's
                    out.append(replace(held, arrival=None))
        return out

    def _end_shelve(
        self, e: AlarmEntry, now: float, state: AlertState, why: AuditDetail | str
    ) -> Alert:
        shelve = e.shelved
        assert shelve is not None
        e.shelved = None
        self.changed.add(e.unit)
        detail = why if isinstance(why, AuditDetail) else AuditDetail(shelve.by, why)
        event = self._audit(e, state, detail, now)
        self._save_or_drop(e)
        return event

    def _save_or_drop(self, e: AlarmEntry) -> None:
        if e.state == "normal" and e.shelved is None:
            self._entries.pop((e.unit, e.alarm), None)
            self._store.delete_alarm(e.unit, e.alarm)
        else:
            self._store.save_alarm(e)

    def _sensors_of(self, alert: Alert, e: AlarmEntry) -> tuple[str, ...]:
        if alert.limit is not None:
            return (alert.limit.sensor,)
        if alert.stale_sensors:
            return tuple(alert.stale_sensors)
        subject = e.subject
        return (subject,) if subject in self._sensors else ()

    def _audit(self, e: AlarmEntry, state: AlertState, detail: AuditDetail, now: float) -> Alert:
        kind: AlertKind = e.kind  # type: ignore[assignment]
        return self._audit_event(
            e.unit, kind, state, e.alert_id, e.severity, now, e.raised_at, e.alarm, detail
        )
