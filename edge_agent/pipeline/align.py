"""Alignment: asynchronous sensor readings in, one complete row per fixed time step out.

The models were trained on a regular grid of steps (``step_seconds``), one value per
sensor per step. Readings arrive one by one, out of order, late, twice or not at all, so
each unit keeps a few *open* steps and closes them strictly in time order:

* a step closes as soon as every sensor has a value for it (a complete telemetry message
  does this on arrival), once every earlier step is closed;
* otherwise it closes when its lateness deadline passes: ``step_end + lateness <= now``,
  where ``now`` is the unit's *event clock*: the newest reading time plus the wall time since
  that reading arrived, capped at the wall clock. Live, the two clocks agree; when a burst of
  history arrives (a backlog after a reconnect, a persistent session draining, a device whose
  clock runs behind) steps are not closed ahead of the data that is still arriving, while a
  unit that falls silent still sees its deadlines pass at wall-clock speed;
* at most :attr:`Aligner.max_open_steps` steps are open per unit; a reading further ahead
  forces the oldest open steps closed (``how="overflow"``), so memory stays bounded even
  when one sensor's clock runs ahead.

At close, a sensor without a value is carried forward from its last value while that value
is younger than ``stale_after_seconds`` (in step time, so replay and live agree); otherwise
the step is *stale*: it must not be scored (``metrics.steps_stale``). Readings for a step
already closed are counted as late (or as duplicates when that sensor already had a value
in it) and dropped, as are second readings of a sensor for an open step.

A unit that has gone silent keeps closing empty stale steps (so the ``sensor_stale`` alarm
can raise); after ``max_empty_stale_run`` of them in a row, the rest of the silence is
skipped in one go (counted as stale and as ``steps_closed{how="skipped"}``, no outcomes),
so a long silence or a jump of the clock costs nothing.

Step ``k`` covers ``[k * step, (k + 1) * step)`` and is reported with its start time;
times are handled in integer microseconds so that a grid like 0.1 s has no rounding gaps.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import numpy as np

from edge_agent.config import AlignSettings
from edge_agent.metrics import Metrics
from edge_agent.pipeline.readings import Reading, Readings
from edge_agent.pipeline.timeline import ClosedStep, OpenStep, Timeline

__all__ = ["MAX_PENDING_PER_UNIT", "Aligner", "ClosedStep"]

#: Closed steps waiting for ``close_due`` per unit; only reached if ticks stop running.
MAX_PENDING_PER_UNIT = 1024


class Aligner:
    """Per-unit step alignment; pure and clock-injected (``now`` is always passed in)."""

    def __init__(
        self,
        sensors: list[str],
        step_seconds: float,
        settings: AlignSettings,
        metrics: Metrics,
        *,
        max_empty_stale_run: int = 16,
        on_lost: Callable[[str, str, int], None] | None = None,
    ) -> None:
        if step_seconds <= 0:
            raise ValueError("step_seconds must be positive")
        self.sensors = list(sensors)
        self.step_seconds = step_seconds
        self._n = len(self.sensors)
        self._step_us = max(1, round(step_seconds * 1e6))
        self._lateness_us = round(settings.lateness_seconds * 1e6)
        self._stale_us = round(settings.stale_after_seconds * 1e6)
        self.max_open_steps = max(4, math.ceil(settings.lateness_seconds / step_seconds) + 3)
        self._max_empty_stale_run = max(1, max_empty_stale_run)
        self._metrics = metrics
        #: Told (what, unit, n) about every late/duplicate reading and dropped backlog step,
        #: so the engine can log them (see edge_agent.pipeline.lost_data).
        self._on_lost = on_lost
        self._closed = {
            how: metrics.steps_closed.labels(how)
            for how in ("complete", "deadline", "overflow", "skipped")
        }
        # Counter.inc takes a lock: per-step counts are added up and flushed in close_due.
        self._closed_counts = dict.fromkeys(self._closed, 0)
        self._stale_count = 0
        self._all_columns = (1 << self._n) - 1
        self._in_order = list(range(self._n))
        self._units: dict[str, Timeline] = {}
        #: (due µs, unit) of every unit, earliest first: ``close_due`` visits only the units
        #: whose first unclosed step may be due, not all of them (10,000 units at a tick
        #: every 100 ms made the walk the agent's main cost). Entries go stale when a unit
        #: is rescheduled; an early visit is harmless (it finds nothing due).
        self._schedule: list[tuple[int, str]] = []
        #: Units with complete steps closed by a message, waiting for ``close_due``.
        self._with_pending: dict[str, None] = {}
        #: True when a message completed a step since the last ``close_due``: the live agent
        #: then scores soon instead of waiting for its periodic tick.
        self.steps_ready = False

    # -- time grid ---------------------------------------------------------------------

    def step_index(self, ts: float) -> int:
        return round(ts * 1e6) // self._step_us

    def step_ts(self, index: int) -> float:
        return index * self._step_us / 1e6

    @property
    def units(self) -> list[str]:
        return list(self._units)

    @property
    def n_units(self) -> int:
        """How many units have state (without building the list: called every tick)."""
        return len(self._units)

    def open_steps(self, unit: str) -> int:
        tl = self._units.get(unit)
        return len(tl.open) if tl is not None else 0

    # -- readings ----------------------------------------------------------------------

    def add(self, r: Reading) -> None:
        """File one reading under its step (convenience; the engine uses ``add_readings``)."""
        self.add_readings(Readings(r.unit, r.ts, r.received, [r.column], [r.value]))

    def add_readings(self, readings: Readings) -> None:
        """File the values of one message under their step; may close complete steps."""
        unit = readings.unit
        tl = self._units.get(unit)
        if tl is None:
            tl = self._units[unit] = Timeline(self._n, ordinal=len(self._units))
        self._file(readings, unit, tl)
        if tl.pending:
            self._with_pending[unit] = None
        self._reschedule(unit, tl)

    def _file(self, readings: Readings, unit: str, tl: Timeline) -> None:
        ts_us = round(readings.ts * 1e6)
        k = ts_us // self._step_us
        if tl.watermark_us is None or ts_us > tl.watermark_us:
            tl.watermark_us = ts_us
        arrival_us = round(readings.received * 1e6)
        if arrival_us > tl.last_arrival_us:
            tl.last_arrival_us = arrival_us
        upto = tl.closed_upto
        if upto is None and tl.open and k <= max(tl.open) - self.max_open_steps:
            upto = max(tl.open) - self.max_open_steps  # before the first close: same bound
        if upto is not None and k <= upto:
            mask = tl.recent.get(k, 0)
            duplicates = sum((mask >> c) & 1 for c in readings.columns)
            late = len(readings.columns) - duplicates
            if duplicates:
                self._metrics.readings_duplicate.inc(duplicates)
            if late:
                self._metrics.readings_late.inc(late)
            if self._on_lost is not None:
                if late:
                    self._on_lost("late", unit, late)
                if duplicates:
                    self._on_lost("duplicate", unit, duplicates)
            return
        slot = tl.open.get(k)
        filled = False
        if slot is None:
            first = tl.first_unclosed()
            if first is not None:
                while k - first >= self.max_open_steps:
                    self._close(tl, unit, first, "overflow")
                    first += 1
            slot = tl.open[k] = OpenStep(self._n)
            if readings.columns == self._in_order:  # a whole snapshot, in model order
                slot.values = list(readings.values)
                slot.count = self._n
                filled = True
        if not filled:
            slot_values = slot.values
            for c, v in zip(readings.columns, readings.values, strict=True):
                if slot_values[c] is not None:
                    self._metrics.readings_duplicate.inc()
                    if self._on_lost is not None:
                        self._on_lost("duplicate", unit, 1)
                    continue
                slot_values[c] = v
                slot.count += 1
        if readings.received > slot.last_received:
            slot.last_received = readings.received
        if readings.ts > slot.last_ts:
            slot.last_ts = readings.ts
        if slot.count == self._n:
            self._close_complete(tl, unit)
        if len(tl.pending) > MAX_PENDING_PER_UNIT:
            drop = len(tl.pending) - MAX_PENDING_PER_UNIT
            del tl.pending[:drop]
            self._metrics.steps_dropped.labels("backlog").inc(drop)
            if self._on_lost is not None:
                self._on_lost("backlog", unit, drop)

    def add_bad(self, unit: str, ts: float, column: int) -> None:
        """Note an impossible reading (rejected by ingest) of ``column`` at ``ts``.

        It fills nothing: at close the sensor is carried forward or stale as if silent,
        and the step reports it in ``bad`` until a valid reading of it closes. It never
        closes or opens steps beyond the open window (a bad reading must not move time):
        one outside it marks the sensor bad from the next closed step on.
        """
        tl = self._units.get(unit)
        if tl is None:
            tl = self._units[unit] = Timeline(self._n, ordinal=len(self._units))
        self._mark_bad(tl, ts, column)
        self._reschedule(unit, tl)

    def _mark_bad(self, tl: Timeline, ts: float, column: int) -> None:
        k = round(ts * 1e6) // self._step_us
        upto = tl.closed_upto
        if upto is not None and k <= upto:
            return  # late: the step is gone; the next impossible reading will count
        slot = tl.open.get(k)
        if slot is None:
            first = tl.first_unclosed()
            if first is None or k - first >= self.max_open_steps:
                tl.bad |= 1 << column
                return
            slot = tl.open[k] = OpenStep(self._n)
        slot.bad |= 1 << column

    def close_due(self, now: float) -> list[ClosedStep]:
        """Close every step whose deadline has passed; return all steps closed since last call.

        Steps come out in time order per unit (units one after another, in the order they
        first appeared). Only units that may have a due step are visited.
        """
        now_us = round(now * 1e6)
        visit = dict.fromkeys(self._with_pending)
        self._with_pending.clear()
        schedule = self._schedule
        while schedule and schedule[0][0] <= now_us:
            due_us, unit = heapq.heappop(schedule)
            if self._units[unit].due_us == due_us:
                visit[unit] = None
        out: list[ClosedStep] = []
        units = self._units
        for unit in sorted(visit, key=lambda u: units[u].ordinal):
            tl = units[unit]
            tl.due_us = None
            self._close_due_unit(tl, unit, now_us)
            if tl.pending:
                out.extend(tl.pending)
                tl.pending.clear()
            self._reschedule(unit, tl)
        self.flush_metrics()
        self.steps_ready = False
        return out

    def unit_clock(self, unit: str, now: float) -> float:
        """The unit's event clock (module docstring) at agent time ``now``: deadlines in
        data time (steps, flood windows) pass at it, so data that lags keeps its lag."""
        tl = self._units.get(unit)
        if tl is None:
            return now
        return _event_clock(tl, round(now * 1e6)) / 1e6

    def _close_due_unit(self, tl: Timeline, unit: str, now_us: int) -> None:
        unit_now = _event_clock(tl, now_us)
        # step k is due when (k + 1) * step + lateness <= the unit's event clock
        last_due = (unit_now - self._lateness_us) // self._step_us - 1
        first = tl.first_unclosed()
        while first is not None and first <= last_due:
            if first not in tl.open and self._silent(tl, first):
                nxt = min((k for k in tl.open if k > first), default=last_due + 1)
                nxt = min(nxt, last_due + 1)
                self._stale_count += nxt - first
                self._closed_counts["skipped"] += nxt - first
                tl.closed_upto = nxt - 1
                tl.recent.clear()
                first = nxt
                continue
            self._close(tl, unit, first, "deadline")
            first += 1
        self._close_complete(tl, unit)

    def _reschedule(self, unit: str, tl: Timeline) -> None:
        """Schedule the unit's next visit: when its first unclosed step becomes due.

        Step k is due once the unit's event clock ``min(now, watermark + now - arrival)``
        reaches ``(k + 1) * step + lateness`` (see :meth:`_close_due_unit`), i.e. at agent
        time ``D + max(0, arrival - watermark)`` while the watermark is below ``D``. A later
        time than the one scheduled waits for the early visit (fewer heap entries).
        """
        first = tl.first_unclosed()
        if first is None:
            return
        due = (first + 1) * self._step_us + self._lateness_us
        w = tl.watermark_us
        if w is not None and w < due:
            due += max(0, tl.last_arrival_us - w)
        if tl.due_us is None or due < tl.due_us:
            tl.due_us = due
            heapq.heappush(self._schedule, (due, unit))

    def flush_metrics(self) -> None:
        """Add the batched step counts to the Prometheus counters (``close_due`` does this)."""
        for how, n in self._closed_counts.items():
            if n:
                self._closed[how].inc(n)
                self._closed_counts[how] = 0
        if self._stale_count:
            self._metrics.steps_stale.inc(self._stale_count)
            self._stale_count = 0

    # -- closing -----------------------------------------------------------------------

    def _silent(self, tl: Timeline, k: int) -> bool:
        """True once a unit has closed enough empty stale steps and every sensor is stale."""
        if tl.empty_stale_run < self._max_empty_stale_run:
            return False
        newest = tl.newest_value_index
        return newest is None or (k - newest) * self._step_us >= self._stale_us

    def _close_complete(self, tl: Timeline, unit: str) -> None:
        first = tl.first_unclosed()
        while first is not None:
            slot = tl.open.get(first)
            if slot is None or slot.count < self._n:
                return
            self._close(tl, unit, first, "complete")
            self.steps_ready = True
            first += 1

    def _close(self, tl: Timeline, unit: str, k: int, how: str) -> None:
        slot = tl.open.pop(k, None)
        n = self._n
        self._closed_counts[how] += 1
        if slot is not None and slot.count == n:  # the common case: nothing to carry
            values: list[float | None] = slot.values
            tl.last_value = values  # type: ignore[assignment]  # complete: no None left
            tl.last_index = [k] * n
            tl.newest_value_index = k
            tl.empty_stale_run = 0
            tl.bad = 0
            tl.closed_upto = k
            tl.recent[k] = self._all_columns
            tl.recent.pop(k - self.max_open_steps, None)
            tl.pending.append(
                ClosedStep(
                    unit,
                    k,
                    k * self._step_us / 1e6,
                    np.array(values, dtype=np.float32),
                    how,
                    (),
                    (),
                    slot.last_received,
                    last_ts=slot.last_ts,
                )
            )
            return
        values = slot.values if slot is not None else [None] * n
        row = [math.nan] * n
        carried: list[int] = []
        stale: list[int] = []
        mask = 0
        last_value, last_index = tl.last_value, tl.last_index
        for i in range(n):
            v = values[i]
            if v is not None:
                row[i] = last_value[i] = v
                last_index[i] = k
                mask |= 1 << i
                continue
            li = last_index[i]
            if li is not None and (k - li) * self._step_us < self._stale_us:
                row[i] = last_value[i]
                carried.append(i)
            else:
                stale.append(i)
        if mask:
            tl.newest_value_index = k
            tl.empty_stale_run = 0
        elif stale:
            tl.empty_stale_run += 1
        if slot is not None and slot.bad:
            tl.bad |= slot.bad & ~mask
        if tl.bad:
            tl.bad &= ~mask  # a valid reading ends a sensor's bad quality
        tl.closed_upto = k
        tl.recent[k] = mask
        tl.recent.pop(k - self.max_open_steps, None)
        if stale:
            self._stale_count += 1
        tl.pending.append(
            ClosedStep(
                unit=unit,
                index=k,
                ts=k * self._step_us / 1e6,
                row=np.array(row, dtype=np.float32),
                how=how,
                carried=tuple(carried),
                stale=tuple(stale),
                last_received=slot.last_received if slot is not None else None,
                bad=tuple(i for i in range(n) if (tl.bad >> i) & 1) if tl.bad else (),
                last_ts=slot.last_ts if slot is not None else None,
            )
        )


def _event_clock(tl: Timeline, now_us: int) -> int:
    """``min(now, watermark + now - last arrival)`` in µs: see :meth:`Aligner.unit_clock`."""
    if tl.watermark_us is None:
        return now_us
    return min(now_us, tl.watermark_us + max(0, now_us - tl.last_arrival_us))
