"""Ingest: MQTT topic + raw payload in, validated :class:`Readings` (one per message) out.

Everything that arrives from the network is untrusted, so this module rejects and counts
instead of raising: a bad message must never stop the agent or reach the models. A message
that yields no reading increments ``metrics.messages_rejected.labels(reason)`` exactly once
and is logged at debug level (plus a rate-limited WARNING per reason and unit, see
:mod:`edge_agent.pipeline.lost_data`), so ``messages_received = messages_accepted + sum(rejected)``
holds; values dropped one by one from a telemetry message are counted in
``metrics.readings_rejected.labels(reason)`` (and the message, if nothing is left of it, once
in ``messages_rejected`` with the reason of its first dropped value).

Rejection reasons (stable strings, used as the metric label):

``oversized``       payload larger than ``ingest.max_payload_bytes`` (checked before parsing)
``bad_topic``       topic matches neither the sensor nor the telemetry template (or another plant)
``unknown_unit``    unit not configured and ``ingest.auto_discover_units`` is off
``too_many_units``  auto-discovery is on but ``ingest.max_units`` units are already tracked
``unknown_sensor``  sensor not in the model set (for telemetry: see above)
``bad_encoding``    payload is not valid UTF-8
``bad_json``        payload is not JSON
``bad_type``        JSON of the wrong shape or type: a string or bool where a number belongs,
                    a missing ``value``/``values``, an empty ``values`` object, …
``not_finite``      NaN or ±inf (e.g. ``1e999``)
``out_of_range``    value outside the sensor's *instrument* range (impossible: a known sensor
                   spec, the manifest's stated range or ``ingest.instrument_ranges``); a
                   value merely outside the training envelope is accepted and scored
``bad_timestamp``   ``ts`` is neither RFC 3339 with a UTC offset nor finite Unix seconds
``too_old``         ``ts`` older than ``align.max_age_seconds`` before arrival
``too_new``         ``ts`` more than ``align.max_future_seconds`` after arrival

Accepted payloads: ``{"ts": <RFC 3339 | Unix seconds>, "value": <number>}`` or a bare
number on a sensor topic; ``{"ts": …, "values": {"<sensor>": <number>, …}}`` on a
telemetry topic. Without ``ts`` the arrival time is used. Extra keys are ignored. A
telemetry message with a value of the wrong type or a non-finite value is malformed and
rejected whole; unknown sensors and out-of-range values are dropped one by one and the rest
is kept: one broken transmitter must not blind the model to the others.

The per-message path is a dict lookup for the topic (cached after the first valid message),
one pydantic-core JSON validation and a few comparisons. The payload shapes and the
:class:`~edge_agent.pipeline.readings.Readings` handed on are in
:mod:`edge_agent.pipeline.readings`, timestamp parsing in :mod:`edge_agent.pipeline.timestamps`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple, Protocol

from pydantic import ValidationError

from edge_agent.config import AgentSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.lost_data import LostDataWarnings
from edge_agent.pipeline.readings import (
    BARE_ADAPTER,
    SENSOR_ADAPTER,
    TELEMETRY_ADAPTER,
    Readings,
    validation_reason,
)
from edge_agent.pipeline.rejections import INGEST_REASONS
from edge_agent.pipeline.sensors import SensorSpec

# Re-exported for benchmarks/ (simulated_plant.py, skab.py), which import it from here.
from edge_agent.pipeline.timestamps import parse_table_timestamp as parse_table_timestamp
from edge_agent.pipeline.timestamps import parse_timestamp
from edge_agent.topics import topic_regex

#: The reasons ingest counts (the enum in :mod:`edge_agent.pipeline.rejections` is the list).
REJECT_REASONS: tuple[str, ...] = tuple(INGEST_REASONS)

#: Unit names as the configuration allows them (see config.UnitSettings).
_UNIT_PATTERN = r"[A-Za-z0-9_.-]{1,128}"
_SENSOR_PATTERN = r"[^/+#]{1,256}"


class EventLogger(Protocol):
    """The slice of a structlog logger the data path uses."""

    def debug(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...


class _Route(NamedTuple):
    """A resolved topic: which unit, and which sensor (None for telemetry)."""

    unit: str
    sensor: SensorSpec | None
    column: int


def _template_regex(template: str, plant: str, captures: Sequence[str]) -> re.Pattern[str]:
    """``plant/{plant}/{unit}/sensors/{sensor}`` → a regex capturing unit and sensor."""
    bodies = {"unit": _UNIT_PATTERN, "sensor": _SENSOR_PATTERN}
    return topic_regex(template, {"plant": plant}, {c: bodies[c] for c in captures})


class Ingestor:
    """Topic routing, payload validation and unit admission for one agent.

    Knows the configured units and admits new ones when auto-discovery is on, so it is
    also the single place that bounds how many units the agent tracks.
    """

    def __init__(
        self,
        settings: AgentSettings,
        sensors: Sequence[SensorSpec],
        metrics: Metrics,
        log: EventLogger,
        lost: LostDataWarnings | None = None,
    ) -> None:
        self._plant = settings.plant
        #: Rate-limited WARNINGs for every rejection (counters alone are silent).
        self._lost = lost if lost is not None else LostDataWarnings(log)
        self._sensor_rx = _template_regex(
            settings.topics.sensor, settings.plant, ("unit", "sensor")
        )
        self._telemetry_rx = _template_regex(settings.topics.telemetry, settings.plant, ("unit",))
        self._max_bytes = settings.ingest.max_payload_bytes
        self._auto_discover = settings.ingest.auto_discover_units
        self._max_units = settings.ingest.max_units
        self._max_age = settings.align.max_age_seconds
        self._max_future = settings.align.max_future_seconds
        self._metrics = metrics
        self._log = log
        self._units: dict[str, None] = dict.fromkeys(u.name for u in settings.units)
        self._rejected = {r: metrics.messages_rejected.labels(r) for r in REJECT_REASONS}
        self._values_rejected = {
            r: metrics.readings_rejected.labels(r) for r in ("unknown_sensor", "out_of_range")
        }
        self._routes: dict[str, _Route] = {}
        self._sensors: dict[str, tuple[int, SensorSpec]] = {}
        self._last_ts_text: str | None = None
        self._last_ts_value = 0.0
        self._instrument_ranges = settings.ingest.instrument_ranges
        #: (unit, ts, column) of every impossible reading since the engine last drained
        #: it: the engine turns them into ``bad_quality`` alarms.
        self.bad_readings: list[tuple[str, float, int]] = []
        self.set_sensors(sensors)

    def set_sensors(self, sensors: Sequence[SensorSpec]) -> None:
        """Adopt a (reloaded) model set's sensors; the instrument ranges may have changed."""
        specs = []
        for s in sensors:
            override = self._instrument_ranges.get(s.name)
            if override is not None:
                s = replace(
                    s,
                    lo=s.lo if override.lo is None else override.lo,
                    hi=s.hi if override.hi is None else override.hi,
                )
            specs.append(s)
        self._sensors = {s.name: (i, s) for i, s in enumerate(specs)}
        self._routes.clear()

    def sensor_spec(self, name: str) -> SensorSpec:
        """The effective spec (instrument range after configuration overrides)."""
        return self._sensors[name][1]

    @property
    def units(self) -> list[str]:
        """Configured units plus those admitted by auto-discovery, in admission order."""
        return list(self._units)

    def reject(self, reason: str, topic: str, detail: Any = None) -> None:
        """Count and log one rejection."""
        self._rejected[reason].inc()
        self._log.debug("message_rejected", reason=reason, topic=topic[:200], detail=detail)
        self._lost.rejected(reason, topic, self.unit_of(topic))

    def unit_of(self, topic: str) -> str | None:
        """The unit a topic names (for logs), None if it matches no template."""
        m = self._telemetry_rx.fullmatch(topic) or self._sensor_rx.fullmatch(topic)
        return m.group("unit") if m is not None else None

    @property
    def sensor_names(self) -> list[str]:
        return list(self._sensors)

    def parse(self, topic: str, payload: bytes, received: float) -> Readings | None:
        """Validated readings of one message; None (counted) when nothing is usable."""
        if len(payload) > self._max_bytes:
            self.reject("oversized", topic, len(payload))
            return None
        route = self._routes.get(topic)
        if route is not None:  # the hot path: a topic seen before
            if route.sensor is not None:
                return self._parse_sensor(topic, route, route.sensor, payload, received)
            return self._parse_telemetry(topic, route.unit, payload, received)
        resolved = self._resolve(topic)
        if isinstance(resolved, str):
            self.reject(resolved, topic)
            return None
        if resolved.sensor is not None:
            readings = self._parse_sensor(topic, resolved, resolved.sensor, payload, received)
        else:
            readings = self._parse_telemetry(topic, resolved.unit, payload, received)
        if readings is not None:
            # Admit a new unit only on a valid message, so junk cannot use up max_units;
            # cache only admitted units' topics, so the cache is bounded too.
            if resolved.unit not in self._units and not self._admit(resolved.unit, topic):
                return None
            self._routes[topic] = resolved
        return readings

    def _admit(self, unit: str, topic: str) -> bool:
        if len(self._units) >= self._max_units:
            self.reject("too_many_units", topic, unit)
            return False
        self._units[unit] = None
        self._log.info("unit_discovered", unit=unit, units=len(self._units))
        return True

    def _resolve(self, topic: str) -> _Route | str:
        # Telemetry first: its template is the more specific one when both could match
        # (``…/{unit}/all`` vs ``…/{unit}/{sensor}``).
        m = self._telemetry_rx.fullmatch(topic)
        if m is not None:
            unit = m.group("unit")
            if unit not in self._units and not self._auto_discover:
                return "unknown_unit"
            return _Route(unit, None, -1)
        m = self._sensor_rx.fullmatch(topic)
        if m is not None:
            unit = m.group("unit")
            if unit not in self._units and not self._auto_discover:
                return "unknown_unit"
            known = self._sensors.get(m.group("sensor"))
            if known is None:
                return "unknown_sensor"
            return _Route(unit, known[1], known[0])
        return "bad_topic"

    def _timestamp(self, raw: Any, received: float, topic: str) -> float | None:
        if raw is None:
            return received
        if type(raw) is str and raw == self._last_ts_text:
            ts = self._last_ts_value  # per-sensor messages of one step share their ts text
        else:
            parsed = parse_timestamp(raw)
            if parsed is None:
                self.reject("bad_timestamp", topic, raw)
                return None
            ts = parsed
            if type(raw) is str:
                self._last_ts_text, self._last_ts_value = raw, ts
        if ts < received - self._max_age:
            self.reject("too_old", topic, ts)
            return None
        if ts > received + self._max_future:
            self.reject("too_new", topic, ts)
            return None
        return ts

    def _parse_sensor(
        self, topic: str, route: _Route, sensor: SensorSpec, payload: bytes, received: float
    ) -> Readings | None:
        raw_ts: Any = None
        try:
            if payload[:1] == b"{" or payload.lstrip()[:1] == b"{":
                obj = SENSOR_ADAPTER.validate_json(payload)
                value = obj["value"]
                raw_ts = obj.get("ts")
            else:
                value = BARE_ADAPTER.validate_json(payload)
        except ValidationError as exc:
            reason = validation_reason(exc, payload)
            self.reject(reason, topic)
            if reason == "not_finite" and route.unit in self._units:
                self.bad_readings.append((route.unit, received, route.column))
            return None
        ts = self._timestamp(raw_ts, received, topic)
        if ts is None:
            return None
        if not sensor.lo <= value <= sensor.hi:
            self.reject("out_of_range", topic, value)
            if route.unit in self._units:
                self.bad_readings.append((route.unit, ts, route.column))
            return None
        return Readings(route.unit, ts, received, [route.column], [value])

    def _parse_telemetry(
        self, topic: str, unit: str, payload: bytes, received: float
    ) -> Readings | None:
        try:
            obj = TELEMETRY_ADAPTER.validate_json(payload)
        except ValidationError as exc:
            self.reject(validation_reason(exc, payload), topic)
            return None
        ts = self._timestamp(obj.get("ts"), received, topic)
        if ts is None:
            return None
        sensors = self._sensors
        columns: list[int] = []
        values: list[float] = []
        dropped: list[str] = []
        unknown = out_of_range = 0
        first = "unknown_sensor"
        for name, v in obj["values"].items():
            known = sensors.get(name)
            if known is None:
                unknown += 1
                if len(dropped) < 5:
                    dropped.append(name[:100])
                continue
            column, spec = known
            if not spec.lo <= v <= spec.hi:
                if not dropped:
                    first = "out_of_range"
                out_of_range += 1
                if len(dropped) < 5:
                    dropped.append(name)
                if unit in self._units:
                    self.bad_readings.append((unit, ts, column))
                continue
            columns.append(column)
            values.append(v)
        if dropped:
            self._drop_values(topic, unknown, out_of_range, dropped)
            if not columns:
                self.reject(first, topic)
                return None
        return Readings(unit, ts, received, columns, values)

    def _drop_values(
        self, topic: str, unknown: int, out_of_range: int, examples: list[str]
    ) -> None:
        """Count the values dropped from one telemetry message, with one log line for all of
        them: a 64 kB message can name thousands of unknown sensors."""
        if unknown:
            self._values_rejected["unknown_sensor"].inc(unknown)
        if out_of_range:
            self._values_rejected["out_of_range"].inc(out_of_range)
        for reason, n in (("unknown_sensor", unknown), ("out_of_range", out_of_range)):
            if n:
                self._lost.values_dropped(reason, topic, self.unit_of(topic), n)
        self._log.debug(
            "readings_rejected",
            topic=topic[:200],
            unknown_sensor=unknown,
            out_of_range=out_of_range,
            sensors=examples,
        )
