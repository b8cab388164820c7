"""Agent configuration: a YAML file, overridden by ``EDGE_AGENT_*`` environment variables.

``EDGE_AGENT_MQTT__HOST=broker`` overrides ``mqtt.host``. Every key is validated, and
:func:`load_settings` turns pydantic's errors into one line per problem naming the key
(how files are read and errors reported: :mod:`edge_agent.config_loading`).

Relative paths in the file (and the defaults ``models`` and ``state``) mean "next to the
config file", wherever the agent is started from; a relative path given in an environment
variable is relative to the working directory, like any path typed in a shell.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

# ConfigError is re-exported: the pipeline raises it for settings it refuses, and the pipeline
# may import only this module of the configuration (tests/test_boundaries.py).
from edge_agent.config_loading import ConfigError as ConfigError
from edge_agent.config_loading import YamlEnvSettings, load_settings_class, resolve_paths
from edge_agent.topics import check_template


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsSettings(_Section):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: Skip hostname verification (never in production; for brokers addressed by IP).
    insecure: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttSettings(_Section):
    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    #: Fixed so the broker keeps this agent's persistent session across restarts.
    client_id: str = ""
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: TlsSettings = Field(default_factory=TlsSettings)
    keepalive: int = Field(default=30, ge=5, le=3600)
    qos: Literal[0, 1, 2] = 1
    #: MQTT 5 session expiry: how long the broker keeps our subscriptions and queued readings.
    session_expiry_seconds: int = Field(default=3600, ge=0)
    reconnect_min_seconds: float = Field(default=0.5, gt=0)
    reconnect_max_seconds: float = Field(default=30.0, gt=0)
    #: MQTT 5 message expiry on alerts; 0 means none.
    alert_expiry_seconds: int = Field(default=86400, ge=0)
    receive_path: Literal["queue", "direct"] = Field(
        default="direct",
        description="How incoming messages reach the agent. 'direct' (default): the agent "
        "reads the socket in 16 KB chunks and decodes PUBLISH packets itself (others go to "
        "paho); there is no queue, so nothing is dropped (the backlog stays in TCP and the "
        "broker). 'queue': aiomqtt's own path (an aiomqtt Message and a bounded queue per "
        "message; a message arriving at a full queue is dropped as queue_full). aiomqtt "
        "manages the connection either way. Measured (benchmarks/ingest_ceiling.py): the "
        "bare direct loop takes 70-82 k msgs per CPU-second, paho's callback 18-26 k.",
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) else v

    @model_validator(mode="after")
    def _password_once(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError("reconnect_max_seconds must be >= reconnect_min_seconds")
        return self

    def resolved_password(self) -> str | None:
        """The password, read from ``password_file`` when one is configured."""
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        return self.password.get_secret_value() if self.password is not None else None


#: Topic template -> (placeholders it may use, placeholders it must use).
_TOPIC_PLACEHOLDERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "sensor": (frozenset({"plant", "unit", "sensor"}), frozenset({"unit", "sensor"})),
    "telemetry": (frozenset({"plant", "unit"}), frozenset({"unit"})),
    "alerts": (frozenset({"plant", "unit", "agent_id"}), frozenset()),
    "scores": (frozenset({"plant", "unit", "agent_id"}), frozenset()),
    "status": (frozenset({"plant", "agent_id"}), frozenset()),
    "alarm_command": (frozenset({"plant", "unit", "agent_id"}), frozenset({"unit"})),
    "alarm_reply": (frozenset({"plant", "unit", "agent_id"}), frozenset({"unit"})),
    "alarms": (frozenset({"plant", "unit", "agent_id"}), frozenset({"unit"})),
}


class TopicSettings(_Section):
    sensor: str = "plant/{plant}/{unit}/sensors/{sensor}"
    telemetry: str = "plant/{plant}/{unit}/telemetry"
    alerts: str = "plant/{plant}/{unit}/alerts"
    scores: str = "plant/{plant}/{unit}/scores"
    status: str = "plant/{plant}/edge/{agent_id}/status"
    #: Alarm lifecycle (see edge_agent.pipeline.lifecycle): commands in, replies and the
    #: retained list out.
    alarm_command: str = "plant/{plant}/{unit}/alarms/command"
    alarm_reply: str = "plant/{plant}/{unit}/alarms/reply"
    alarms: str = "plant/{plant}/{unit}/alarms"
    publish_scores: bool = False

    @field_validator(
        "sensor",
        "telemetry",
        "alerts",
        "scores",
        "status",
        "alarm_command",
        "alarm_reply",
        "alarms",
    )
    @classmethod
    def _template(cls, v: str, info: ValidationInfo) -> str:
        """Checked here, not when first used: a typo in the alerts topic would otherwise
        fail every publish of a running agent, and one in an input topic only at start."""
        allowed, required = _TOPIC_PLACEHOLDERS[str(info.field_name)]
        check_template(v, allowed, required)
        return v


class SensorLimits(_Section):
    """Operating limits of one sensor; a reading beyond them raises a ``limit`` alert."""

    lolo: float | None = None
    lo: float | None = None
    hi: float | None = None
    hihi: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SensorLimits:
        values = [v for v in (self.lolo, self.lo, self.hi, self.hihi) if v is not None]
        if values != sorted(values):
            raise ValueError("limits must be ordered lolo <= lo <= hi <= hihi")
        return self


class UnitSettings(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    limits: dict[str, SensorLimits] = Field(default_factory=dict)


class ModelSettings(_Section):
    dir: Path = Path("models")
    #: The sensors this deployment publishes, in model order; a model set with another list is
    #: refused. None: accept the first set's list and pin it for reloads.
    expected_sensors: list[str] | None = None
    threads: int = Field(default=1, ge=1, le=64)
    #: Threads that score the parts of a large batch at once (many units closing a step
    #: together, a backlog): 0 = the CPUs this process may use, at most 4.
    batch_threads: int = Field(default=0, ge=0, le=64)
    #: onnxruntime's CPU arena keeps its buffers between calls. It grows to the largest call
    #: and never shrinks, so parts are at most ``MAX_SCORE_BATCH`` windows (+12 MB with two
    #: threads). Off, every call maps and faults its buffers afresh (the agent returns large
    #: blocks to the OS, ``MALLOC_MMAP_THRESHOLD_``): measured 1.6-1.7x the CPU per window.
    enable_cpu_mem_arena: bool = True
    #: Score every n-th closed step (1 = every step).
    stride: int = Field(default=1, ge=1)


class AlignSettings(_Section):
    #: None: take the step period from the model manifest.
    step_seconds: float | None = Field(default=None, gt=0)
    #: A step closes this long after its end even if a sensor has not reported.
    lateness_seconds: float = Field(default=2.0, ge=0)
    #: A missing sensor is carried forward while its last value is fresher than this.
    stale_after_seconds: float = Field(default=10.0, gt=0)
    #: Readings further than this in the future (vs the agent clock) are rejected.
    max_future_seconds: float = Field(default=60.0, gt=0)
    #: Readings older than this (vs the agent clock) are rejected as too old.
    max_age_seconds: float = Field(default=3600.0, gt=0)


class AlarmSettings(_Section):
    on_delay: int = Field(default=3, ge=1)
    off_delay: int = Field(default=10, ge=1)
    #: At most this many raised alerts per unit per flood window; more are counted and summarised.
    flood_max: int = Field(default=10, ge=1)
    flood_window_seconds: float = Field(default=600.0, gt=0)
    top_sensors: int = Field(default=3, ge=1)
    #: A shelve command without ``duration_seconds`` lasts this long; none may exceed the max.
    shelve_default_seconds: float = Field(default=3600.0, gt=0)
    shelve_max_seconds: float = Field(default=8 * 3600.0, gt=0)

    @model_validator(mode="after")
    def _shelve_bounds(self) -> AlarmSettings:
        if self.shelve_default_seconds > self.shelve_max_seconds:
            raise ValueError("shelve_default_seconds must be <= shelve_max_seconds")
        return self


SuppressibleKind = Literal["anomaly", "limit", "sensor_stale", "bad_quality"]
_SUPPRESSED_KINDS: tuple[SuppressibleKind, ...] = ("anomaly", "limit")


class SuppressionSettings(_Section):
    """Suppression by design: while ``sensor`` is below ``below`` (a unit offline or starting
    up), alarms of ``kinds`` are not annunciated; limit alarms of ``safety_sensors`` always are."""

    #: The unit's own reading that tells its operating state; null = no suppression.
    sensor: str | None = None
    below: float | None = None
    kinds: list[SuppressibleKind] = Field(default_factory=lambda: list(_SUPPRESSED_KINDS))
    safety_sensors: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _both(self) -> SuppressionSettings:
        if (self.sensor is None) != (self.below is None):
            raise ValueError("give suppression.sensor and suppression.below together")
        return self


class OutboxSettings(_Section):
    #: Relative paths are under the agent's state_dir.
    path: Path = Path("outbox.sqlite")
    max_rows: int = Field(default=10000, ge=1)
    max_age_seconds: float = Field(default=7 * 86400.0, gt=0)


class MetricsSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: auto: human-readable on a terminal, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class InstrumentRange(_Section):
    """What a transmitter can physically report; a reading outside it is impossible."""

    lo: float | None = None
    hi: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> InstrumentRange:
        if self.lo is not None and self.hi is not None and not self.lo < self.hi:
            raise ValueError("lo must be below hi")
        return self


class IngestSettings(_Section):
    max_payload_bytes: int = Field(default=65536, ge=64)
    #: Accept readings for units not listed under ``units`` (up to max_units).
    auto_discover_units: bool = False
    max_units: int = Field(default=1000, ge=1)
    #: Instrument ranges per sensor, overriding the model set's (a bound given here
    #: replaces the manifest's; one left out keeps it).
    instrument_ranges: dict[str, InstrumentRange] = Field(default_factory=dict)


class PlantInfo(_Section):
    """What the plant is, for people reading the status message; every key optional.

    ``edge-agent demo`` fills it from the shipped GPPD extract (:mod:`edge_agent.tools.plants`).
    """

    name: str | None = Field(default=None, min_length=1)
    gppd_id: str | None = None
    fuel: str | None = None
    capacity_mw: float | None = Field(default=None, gt=0)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)

    def status_fields(self) -> dict[str, str | float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class AgentSettings(YamlEnvSettings):
    """The whole agent configuration; see config/agent.yaml for every key, documented."""

    model_config = SettingsConfigDict(
        env_prefix="EDGE_AGENT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    agent_id: str = Field(default_factory=lambda: socket.gethostname() or "edge-agent")
    plant: str = Field(default="plant1", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    plant_info: PlantInfo = Field(default_factory=PlantInfo)
    state_dir: Path = Path("state")
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    units: list[UnitSettings] = Field(default_factory=list)
    models: ModelSettings = Field(default_factory=ModelSettings)
    align: AlignSettings = Field(default_factory=AlignSettings)
    alarm: AlarmSettings = Field(default_factory=AlarmSettings)
    suppression: SuppressionSettings = Field(default_factory=SuppressionSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)

    @model_validator(mode="after")
    def _units_unique(self) -> AgentSettings:
        names = [u.name for u in self.units]
        if len(set(names)) != len(names):
            raise ValueError("unit names must be unique")
        if not names and not self.ingest.auto_discover_units:
            raise ValueError("configure at least one unit, or set ingest.auto_discover_units")
        return self

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"edge-agent-{self.agent_id}"

    @property
    def outbox_path(self) -> Path:
        p = self.outbox.path
        return p if p.is_absolute() else self.state_dir / p

    @property
    def alarm_store_path(self) -> Path:
        """Alarm states, shelves and out-of-service marks: beside the outbox."""
        return self.outbox_path.with_name("alarms.sqlite")


#: Config keys holding paths (``outbox.path`` is relative to ``state_dir`` instead).
PATH_KEYS: tuple[str, ...] = (
    "state_dir",
    "models.dir",
    "mqtt.password_file",
    "mqtt.tls.ca_file",
    "mqtt.tls.cert_file",
    "mqtt.tls.key_file",
)


def load_settings(path: Path | str | None = None, **overrides: Any) -> AgentSettings:
    """Load YAML (if given) + environment; raise :class:`ConfigError` with one line per problem.

    With a file, relative paths resolve against its directory (see the module docstring).
    """
    settings = load_settings_class(AgentSettings, path, **overrides)
    if path is not None:
        settings = resolve_paths(settings, Path(path).resolve().parent, PATH_KEYS, "EDGE_AGENT_")
    return settings
