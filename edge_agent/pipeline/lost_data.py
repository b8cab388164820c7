"""Loud about lost data: one rate-limited WARNING per reason (and unit) for every message or
reading the agent does not use.

Counters alone are silent: a new user whose unit name is not configured, or whose device
stamps readings an hour behind, sees "nothing happens" and an empty log. Logging every
dropped message is the opposite failure (a flood of identical lines, and log I/O on the hot
path). So each distinct (what, reason, unit) gets one WARNING the first time it happens and
then at most one per ``interval`` seconds, each with the count since the previous line, the
running total and an example topic. :meth:`LostDataWarnings.flush` (called from the
engine's tick) reports counts left over at the end of a burst.

The first message from a unit that is not configured also says how to fix it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

#: Seconds between two lines for the same key.
DEFAULT_INTERVAL = 60.0
#: Distinct keys tracked; more (e.g. junk unit names) share one key per reason.
MAX_KEYS = 1000

#: What each reason means, for the person reading the log (rejections of whole messages).
_HINTS: dict[str, str] = {
    "unknown_unit": "unit {unit} is not configured: add '- name: {unit}' under 'units:' in "
    "the agent config, or set ingest.auto_discover_units: true "
    "(EDGE_AGENT_INGEST__AUTO_DISCOVER_UNITS=true)",
    "too_many_units": "ingest.max_units units are tracked already; raise ingest.max_units",
    "bad_topic": "the topic matches neither topics.sensor nor topics.telemetry for this plant",
    "unknown_sensor": "the sensor is not in the model set's sensor list (models/manifest.json)",
    "too_old": "the reading's ts is older than align.max_age_seconds: check the device clock",
    "too_new": "the reading's ts is ahead by more than align.max_future_seconds: check the "
    "device clock",
    "out_of_range": "the value is outside the sensor's valid range in the model manifest",
    "oversized": "the payload is larger than ingest.max_payload_bytes",
    "queue_full": "the agent could not keep up with the incoming message rate",
}
_READING_HINTS: dict[str, str] = {
    "late": "readings for a step that had already closed (more than align.lateness_seconds "
    "behind the unit's newest reading); they are not scored",
    "duplicate": "a second value for the same sensor and step (e.g. a QoS 1 redelivery); "
    "the first value was kept",
    "backlog": "closed steps dropped because the unit's backlog of unscored steps overflowed",
}


class WarningLogger(Protocol):
    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...


@dataclass(slots=True)
class _Entry:
    event: str
    fields: dict[str, Any]
    example_topic: str
    pending: int = 0
    total: int = 0
    last_logged: float = float("-inf")


class LostDataWarnings:
    """Rate-limited WARNINGs for rejected messages and lost readings of one agent."""

    def __init__(
        self,
        log: WarningLogger,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._entries: dict[tuple[str, str, str | None], _Entry] = {}
        #: Keys with counts not logged yet: what ``flush`` looks at (it runs every tick).
        self._pending: set[tuple[str, str, str | None]] = set()

    def rejected(self, reason: str, topic: str, unit: str | None = None, n: int = 1) -> None:
        """``n`` messages (or telemetry values) rejected for ``reason``."""
        fields: dict[str, Any] = {"reason": reason}
        hint = _HINTS.get(reason)
        if hint:
            fields["hint"] = hint.format(unit=unit or "?")
        self._note("messages_rejected", reason, unit, topic, n, fields)

    def values_dropped(self, reason: str, topic: str, unit: str | None, n: int) -> None:
        """``n`` values dropped from telemetry messages (the rest of the message was used)."""
        fields: dict[str, Any] = {"reason": reason}
        hint = _HINTS.get(reason)
        if hint:
            fields["hint"] = hint.format(unit=unit or "?")
        self._note("readings_rejected", reason, unit, topic, n, fields)

    def readings_lost(self, what: str, unit: str, topic: str, n: int = 1) -> None:
        """``n`` readings of ``unit`` not used: ``late``, ``duplicate`` or ``backlog`` steps."""
        fields: dict[str, Any] = {"hint": _READING_HINTS.get(what, what)}
        self._note(f"readings_{what}", what, unit, topic, n, fields)

    def flush(self) -> None:
        """Log the counts of keys whose interval has passed since their last line."""
        if not self._pending:
            return
        now = self._clock()
        for key in list(self._pending):
            entry = self._entries[key]
            if now - entry.last_logged >= self._interval:
                self._emit(entry, now)
                self._pending.discard(key)

    # -- internals -----------------------------------------------------------------------

    def _note(
        self,
        event: str,
        reason: str,
        unit: str | None,
        topic: str,
        n: int,
        fields: dict[str, Any],
    ) -> None:
        key = (event, reason, unit)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= MAX_KEYS:
                key = (event, reason, "(other units)")
                entry = self._entries.get(key)
            if entry is None:
                if unit is not None:
                    fields = {**fields, "unit": key[2]}
                entry = self._entries[key] = _Entry(event, fields, topic[:200])
        if not entry.pending:
            entry.example_topic = topic[:200]
        entry.pending += n
        entry.total += n
        now = self._clock()
        if now - entry.last_logged >= self._interval:
            self._emit(entry, now)
        else:
            self._pending.add(key)

    def _emit(self, entry: _Entry, now: float) -> None:
        self._log.warning(
            entry.event,
            **entry.fields,
            count=entry.pending,
            total=entry.total,
            example_topic=entry.example_topic,
            next_report_within_seconds=self._interval,
        )
        entry.pending = 0
        entry.last_logged = now
