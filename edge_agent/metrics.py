"""Prometheus metrics of one agent instance.

Every agent owns its own registry (no module-level global metrics), so tests and the
replay command can build as many as they like without collisions.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_INFERENCE_BUCKETS = (
    0.00002,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)


class Metrics:
    """All metrics of the agent; attribute names are the API used by the other modules."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = "edge_agent_"
        self.messages_received = Counter(
            p + "messages_received", "MQTT messages received", registry=r
        )
        self.messages_rejected = Counter(
            p + "messages_rejected",
            "Messages rejected, once per message, by reason",
            ["reason"],
            registry=r,
        )
        self.messages_accepted = Counter(
            p + "messages_accepted",
            "Messages with at least one accepted reading; every other message received is "
            "counted once in messages_rejected",
            registry=r,
        )
        self.readings_accepted = Counter(
            p + "readings_accepted", "Sensor readings accepted", registry=r
        )
        self.readings_rejected = Counter(
            p + "readings_rejected",
            "Values dropped from telemetry messages, by reason (unknown_sensor, out_of_range)",
            ["reason"],
            registry=r,
        )
        self.readings_late = Counter(
            p + "readings_late", "Readings for an already closed step", registry=r
        )
        self.readings_duplicate = Counter(
            p + "readings_duplicate", "Second reading of a sensor for the same step", registry=r
        )
        self.steps_closed = Counter(
            p + "steps_closed", "Steps closed, by how they closed", ["how"], registry=r
        )
        self.steps_scored = Counter(p + "steps_scored", "Steps scored by the models", registry=r)
        self.steps_stale = Counter(
            p + "steps_stale", "Steps not scored because a sensor was stale", registry=r
        )
        self.steps_dropped = Counter(
            p + "steps_dropped", "Closed steps not scored, by reason", ["reason"], registry=r
        )
        self.inference_seconds = Histogram(
            p + "inference_seconds",
            "onnxruntime time per batch, by model",
            ["model"],
            buckets=_INFERENCE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            p + "batch_size",
            "Windows per scoring batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.reading_to_score_seconds = Histogram(
            p + "reading_to_score_seconds",
            "Arrival of a step's last reading to its score",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reading_age_at_score_seconds = Histogram(
            p + "reading_age_at_score_seconds",
            "The step's newest reading's own timestamp to its score: also counts the time "
            "before the agent received it (source, broker, socket); needs synchronised clocks",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reading_to_alert_seconds = Histogram(
            p + "reading_to_alert_seconds",
            "Arrival of the reading that raised an alert to publish",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.alerts_raised = Counter(
            p + "alerts_raised", "Alerts raised, by kind", ["kind"], registry=r
        )
        self.alerts_cleared = Counter(
            p + "alerts_cleared", "Alerts cleared, by kind", ["kind"], registry=r
        )
        self.alerts_suppressed = Counter(
            p + "alerts_suppressed",
            "Raised alerts held back by the flood guard",
            ["kind"],
            registry=r,
        )
        self.alerts_published = Counter(
            p + "alerts_published", "Alerts acknowledged by the broker", registry=r
        )
        self.outbox_depth = Gauge(p + "outbox_depth", "Alerts waiting in the outbox", registry=r)
        self.outbox_dropped = Counter(
            p + "outbox_dropped",
            "Alerts dropped from the outbox, by reason",
            ["reason"],
            registry=r,
        )
        self.outbox_available = Gauge(
            p + "outbox_available",
            "1 when the on-disk outbox is writable, 0 when degraded",
            registry=r,
        )
        self.outbox_errors = Counter(p + "outbox_errors", "Outbox storage errors", registry=r)
        self.broker_connected = Gauge(
            p + "broker_connected", "1 while connected to the broker", registry=r
        )
        self.reconnects = Counter(
            p + "reconnects", "Broker connection attempts after a loss", registry=r
        )
        self.publish_dropped = Counter(
            p + "publish_dropped",
            "Non-alert messages (scores) dropped, by reason",
            ["reason"],
            registry=r,
        )
        self.model_set = Info(p + "model_set", "Loaded model set", registry=r)
        self.units_tracked = Gauge(p + "units_tracked", "Units with live state", registry=r)
        self.event_loop_lag_seconds = Histogram(
            p + "event_loop_lag_seconds",
            "How late the event loop woke a periodic timer",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            p + "reloads", "Config/model reloads, by result", ["result"], registry=r
        )
        # -- alarm lifecycle (edge_agent.pipeline.lifecycle, alarm_kpi) ----------------------
        self.alarm_commands = Counter(
            p + "alarm_commands",
            "Alarm commands received, by command and result (accepted, refused)",
            ["command", "result"],
            registry=r,
        )
        self.alarm_commands_refused = Counter(
            p + "alarm_commands_refused",
            "Alarm commands refused, by reason (bad_json, schema, wrong_unit, unknown_alarm, "
            "bad_duration, not_applicable, retained)",
            ["reason"],
            registry=r,
        )
        self.alarm_store_errors = Counter(
            p + "alarm_store_errors", "Alarm state storage errors", registry=r
        )
        self.alarm_rate_10min = Gauge(
            p + "alarm_rate_10min", "Alarms raised in the last 10 minutes", ["unit"], registry=r
        )
        self.alarms_chattering = Gauge(
            p + "alarms_chattering",
            "Alarms with >= 3 transitions in the last minute",
            ["unit"],
            registry=r,
        )
        self.alarms_standing = Gauge(
            p + "alarms_standing", "Alarms active for more than 24 h", ["unit"], registry=r
        )
        self.alarms_shelved = Gauge(p + "alarms_shelved", "Shelved alarms", ["unit"], registry=r)
        self.alarms_out_of_service = Gauge(
            p + "alarms_out_of_service",
            "Out-of-service marks: scope unit (0/1) and sensors (how many)",
            ["unit", "scope"],
            registry=r,
        )
        self.alarms_listed = Gauge(
            p + "alarms_listed",
            "Alarms in the retained alarm list, by ISA-18.2 state",
            ["unit", "state"],
            registry=r,
        )
        self.alarm_flood_periods = Gauge(
            p + "alarm_flood_periods",
            "10-minute flood periods (more than alarm.flood_max raises) since start",
            ["unit"],
            registry=r,
        )
        self.alarm_flood_active = Gauge(
            p + "alarm_flood_active", "1 while the unit is in an alarm flood", ["unit"], registry=r
        )
        self.outbox_available.set(1)
