"""Console configuration: a YAML file, overridden by ``EDGE_CONSOLE_*`` environment variables.

Read and reported exactly like the agent's (``edge_agent.config_loading.load_settings_class``): one
line per bad key, never a traceback. The MQTT section *is* the agent's, so credentials, TLS
and the persistent session are configured the same way on both sides.
"""

from __future__ import annotations

import socket
from pathlib import Path
from string import Formatter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from edge_agent.config import LoggingSettings, MqttSettings, SensorLimits, TopicSettings
from edge_agent.config_loading import (
    YamlEnvSettings,
    env_sets,
    load_settings_class,
    resolve_paths,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: Topic template -> the placeholders it must contain (so the console can tell plant/unit apart).
_REQUIRED: dict[str, frozenset[str]] = {
    "alerts": frozenset({"plant", "unit"}),
    "alarms": frozenset({"plant", "unit"}),
    "alarm_command": frozenset({"plant", "unit"}),
    "alarm_reply": frozenset({"plant", "unit"}),
    "scores": frozenset({"plant", "unit"}),
    "status": frozenset({"plant", "agent_id"}),
    "telemetry": frozenset({"plant", "unit"}),
    "sensor": frozenset({"plant", "unit", "sensor"}),
}


_AGENT_TOPICS = TopicSettings()


class ConsoleTopics(_Section):
    """The agents' topic templates (the alarm-lifecycle contract's defaults)."""

    # Defaults are the agent's own (edge_agent.config.TopicSettings): one source of truth.
    alerts: str = _AGENT_TOPICS.alerts
    alarms: str = _AGENT_TOPICS.alarms
    alarm_command: str = _AGENT_TOPICS.alarm_command
    alarm_reply: str = _AGENT_TOPICS.alarm_reply
    scores: str = _AGENT_TOPICS.scores
    status: str = _AGENT_TOPICS.status
    #: The plant's own readings, for the sensor trends (see ``web.sensor_trends``).
    telemetry: str = _AGENT_TOPICS.telemetry
    sensor: str = _AGENT_TOPICS.sensor

    @field_validator("*")
    @classmethod
    def _template(cls, v: str, info: Any) -> str:
        names = [name for _, name, _, _ in Formatter().parse(v) if name]
        if not v or "+" in v or "#" in v:
            raise ValueError("must be a non-empty topic without the wildcards + and #")
        missing = sorted(_REQUIRED[str(info.field_name)] - set(names))
        if missing:
            raise ValueError(f"needs the placeholder {{{missing[0]}}}")
        for level in v.split("/"):
            if "{" in level and not (level.startswith("{") and level.endswith("}")):
                raise ValueError("a placeholder must fill a whole topic level, e.g. /{unit}/")
        return v


class DatabaseSettings(_Section):
    #: SQLAlchemy URL; relative SQLite paths are under state_dir. Production:
    #: ``postgresql+psycopg://user:password@host/dbname``.
    url: str = "sqlite:///console.sqlite"
    #: Password for the URL, kept out of it (and out of logs).
    password: SecretStr | None = None
    #: Score history: one row per unit per bucket of this many seconds (max and mean).
    score_bucket_seconds: float = Field(default=10.0, gt=0)
    #: Score rows older than this are deleted.
    score_retention_days: float = Field(default=30.0, gt=0)
    #: And never more than this many score rows in total (oldest go first).
    score_max_rows: int = Field(default=2_000_000, ge=100)
    #: Rows waiting for the database while it is down; beyond this the oldest are dropped
    #: (and counted).
    buffer_max_rows: int = Field(default=100_000, ge=10)
    flush_interval_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=10.0, gt=0)


class UserSettings(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.@-]+$")
    #: An argon2 hash from ``edge-console hash-password``; never the password itself.
    password_hash: SecretStr

    @field_validator("password_hash")
    @classmethod
    def _hashed(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith("$argon2"):
            raise ValueError("must be an argon2 hash (make one with `edge-console hash-password`)")
        return v


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Signs the session cookie; set it so sign-ins survive a restart (random otherwise).
    session_secret: SecretStr | None = None
    session_max_age_seconds: int = Field(default=12 * 3600, ge=60)
    #: Seconds of score history shown on the Live page.
    live_window_seconds: float = Field(default=300.0, gt=0)
    #: Browser refresh of changed units (the server pushes over the page's websocket).
    refresh_seconds: float = Field(default=0.5, gt=0)
    #: Score and trend curves redraw at most this often (text and colours every refresh).
    chart_refresh_seconds: float = Field(default=2.0, gt=0)
    #: Also subscribe to the plants' readings (telemetry and per-sensor topics) for the sensor
    #: trends on the Live page (kept at most one point per second per sensor).
    sensor_trends: bool = True


class TrainingSettings(_Section):
    #: Uploaded files and training outputs go here (relative: under state_dir).
    work_dir: Path = Path("training")
    #: The trainer command; None: ``<this python> -m training`` (the same as edge-train).
    command: list[str] | None = None
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)


class ConsoleSettings(YamlEnvSettings):
    """The whole console configuration; config/console.yaml documents every key."""

    model_config = SettingsConfigDict(
        env_prefix="EDGE_CONSOLE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    console_id: str = Field(default_factory=lambda: socket.gethostname() or "console")
    plants: list[str] = Field(default_factory=lambda: ["plant1"], min_length=1)
    state_dir: Path = Path("console-state")
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    topics: ConsoleTopics = Field(default_factory=ConsoleTopics)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    users: list[UserSettings] = Field(default_factory=list)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    #: Operating limits drawn on the sensor trends: unit name (or "*" for every unit) ->
    #: sensor -> lolo/lo/hi/hihi, the same keys as the agent's ``units[].limits``.
    limits: dict[str, dict[str, SensorLimits]] = Field(default_factory=dict)
    #: Folders holding model sets (manifest.json + report/) the Models page can show by version.
    model_dirs: list[Path] = Field(default_factory=list)
    #: The MLflow UI of the training runs (e.g. ``http://mlflow.plant.local:5000``); the Models
    #: page then links each agent's registered model version there. None: run ids as text only.
    tracking_ui_url: str | None = None
    #: The MLflow tracking store ``edge-train train`` records runs in (its ``tracking.uri``;
    #: by default ``sqlite:///<training output>/../mlruns.db``, an absolute path here), or an
    #: http(s) MLflow server. Set: the Models page lists the experiment's newest runs and marks
    #: the one behind each agent's model set. None: no run list.
    tracking_uri: str | None = None
    tracking_experiment: str = "edge-agent"
    tracking_max_runs: int = Field(default=20, ge=1, le=500)
    #: Alarm-history defaults for the KPIs (ISA-18.2 uses 24 h for "standing").
    standing_after_seconds: float = Field(default=24 * 3600.0, gt=0)

    @field_validator("plants")
    @classmethod
    def _plant_names(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p or any(c in p for c in "+#/"):
                raise ValueError(f"plant name {p!r} must be non-empty, without + # /")
        if len(set(v)) != len(v):
            raise ValueError("plant names must be unique")
        return v

    @model_validator(mode="after")
    def _users_unique(self) -> ConsoleSettings:
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("user names must be unique")
        return self

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"edge-console-{self.console_id}"

    @property
    def database_url(self) -> str:
        """The URL with relative SQLite paths under state_dir (the password is added later)."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and url != prefix and not url.startswith(prefix + "/"):
            rel = url[len(prefix) :]
            if rel != ":memory:":
                return prefix + str((self.state_dir / rel).resolve())
        return url

    def limits_for(self, unit: str) -> dict[str, SensorLimits]:
        return {**self.limits.get("*", {}), **self.limits.get(unit, {})}

    @property
    def training_dir(self) -> Path:
        d = self.training.work_dir
        return d if d.is_absolute() else self.state_dir / d


#: Keys holding paths that, given relative in the file, are relative to the file (as the agent's).
PATH_KEYS = (
    "state_dir",
    "mqtt.password_file",
    "mqtt.tls.ca_file",
    "mqtt.tls.cert_file",
    "mqtt.tls.key_file",
)


def load_console_settings(path: Path | str | None = None, **overrides: Any) -> ConsoleSettings:
    """YAML (if given) + environment; :class:`edge_agent.config.ConfigError` on bad keys.

    With a file, relative paths (``state_dir``, MQTT files, ``model_dirs``) resolve against
    its directory, like the agent's; the database and training folders live in state_dir."""
    settings = load_settings_class(ConsoleSettings, path, **overrides)
    if path is None:
        return settings
    base = Path(path).resolve().parent
    settings = resolve_paths(settings, base, PATH_KEYS, "EDGE_CONSOLE_")
    if not env_sets("model_dirs", "EDGE_CONSOLE_"):
        settings.model_dirs = [d if d.is_absolute() else base / d for d in settings.model_dirs]
    return settings
