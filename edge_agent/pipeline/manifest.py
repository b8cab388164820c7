"""The model manifest: the contract between training and the agent.

Training writes ``manifest.json`` beside the ONNX files; the agent loads it with
:func:`load_manifest`, which refuses a model set whose files are missing, whose
checksums differ, or whose sensor list is not the one the agent was configured for.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from edge_agent.pipeline.features import FeatureSpec
from edge_agent.pipeline.sensors import SensorSpec

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ManifestError(Exception):
    """A model set the agent must not run; ``problems`` has one line per thing that is wrong."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorEntry(_Strict):
    """``lo``/``hi``: the instrument range (null = not known; readings outside it are
    impossible and rejected). ``envelope_lo``/``envelope_hi``: the training data's range
    (readings outside it are scored and named in the alert, never rejected)."""

    name: str = Field(min_length=1)
    unit: str = ""
    lo: float | None = None
    hi: float | None = None
    description: str = ""
    envelope_lo: float | None = None
    envelope_hi: float | None = None
    #: Sensor health (``edge_agent.pipeline.sensor_health``): frozen after this many equal readings;
    #: noisy above this roughness. Learned from the fit data; null = not checked.
    frozen_limit_steps: int | None = Field(default=None, ge=2)
    roughness_hi: float | None = Field(default=None, gt=0)
    #: The roughness ``roughness_hi`` limits leaves out this many of a window's largest step
    #: changes (0: sets written before 2026-12-06, judged as they were).
    roughness_trim: int = Field(default=0, ge=0)

    def to_spec(self) -> SensorSpec:
        return SensorSpec.from_dict(self.model_dump())

    @model_validator(mode="after")
    def _range_ordered(self) -> SensorEntry:
        for a, b, what in (
            (self.lo, self.hi, "lo must be below hi"),
            (self.envelope_lo, self.envelope_hi, "envelope_lo must not exceed envelope_hi"),
        ):
            if a is not None and b is not None and (a > b or (a == b and what[0] == "l")):
                raise ValueError(f"sensor {self.name}: {what}")
        return self


class FeatureEntry(_Strict):
    version: int = 1
    sensors: list[str]
    rolling: int = Field(ge=2)
    derived: list[str] = Field(default_factory=list)
    names: list[str]

    def to_spec(self) -> FeatureSpec:
        return FeatureSpec.from_dict(self.model_dump())


class ModelEntry(_Strict):
    """One ONNX model and how to read its score.

    ``score = score_sign * output[score_output]``; higher is more anomalous and
    ``score > threshold`` is the model's own anomalous decision. ``score_center`` and
    ``score_scale`` normalise it on normal data for the calibrated ensemble (see
    :mod:`edge_agent.pipeline.ensemble`): ``(score - score_center) / score_scale``.
    """

    kind: Literal["iforest", "lstm_ae"]
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input_name: str
    input_kind: Literal["features", "window"]
    input_shape: list[int | None]
    score_output: str
    score_sign: Literal[-1, 1] = 1
    per_sensor_output: str | None = None
    threshold: float
    score_center: float = 0.0
    score_scale: float = Field(gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


class VotingEntry(_Strict):
    """How the models' scores become one decision (see :mod:`edge_agent.pipeline.ensemble`).

    ``calibrated``: anomalous when the fused normalised score (``fusion``: the largest, or
    the weighted mean) reaches ``fused_threshold`` (placed on normal data at the
    false-alarm rate ``1 - quantile``).
    ``majority``: when more than half of the models say so. ``weighted``: when
    sum(weight of anomalous models) / sum(weights) >= ``threshold``.
    """

    strategy: Literal["calibrated", "majority", "weighted"] = "calibrated"
    fusion: Literal["max", "mean"] = "max"
    weights: dict[str, float]
    threshold: float = Field(default=0.5, gt=0, le=1)
    fused_threshold: float = 0.0
    #: The quantile of normal (out-of-fold) fused scores that ``fused_threshold`` is.
    quantile: float | None = Field(default=None, gt=0, lt=1)


class TrackingEntry(_Strict):
    """Where the set came from: the tracked training run and its registry version.

    Optional (older manifests have none); lets an alert be traced to the run behind it.
    """

    run_id: str = Field(min_length=1)
    experiment: str | None = None
    registered_model: str | None = None
    registered_version: int | None = Field(default=None, ge=1)


def warning_list(found: object) -> list[str]:
    """Training warnings as read from a manifest or an agent's status: a list of strings, or
    none when the field is missing or malformed (an older set, a hand-edited file)."""
    return [str(w) for w in found] if isinstance(found, list) else []


class Manifest(_Strict):
    format_version: int
    model_set_version: str
    created_at: str
    training_data_sha256: str
    sensors: list[SensorEntry] = Field(min_length=1)
    window: int = Field(ge=2)
    step_seconds: float = Field(gt=0)
    features: FeatureEntry
    scalers: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, ModelEntry] = Field(min_length=1)
    voting: VotingEntry
    metrics: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    tracking: TrackingEntry | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [s.name for s in self.sensors]
        if len(set(names)) != len(names):
            raise ValueError("sensor names must be unique")
        if self.features.sensors != names:
            raise ValueError("features.sensors must equal the sensor list, in order")
        over = [s.name for s in self.sensors if s.roughness_trim > self.features.rolling - 2]
        if over:
            raise ValueError(
                f"roughness_trim leaves fewer than one of the {self.features.rolling - 1} step "
                f"changes of a window for sensors {over}"
            )
        unknown = set(self.voting.weights) - set(self.models)
        if unknown:
            raise ValueError(f"voting weights name unknown models: {sorted(unknown)}")
        return self

    @property
    def training_warnings(self) -> list[str]:
        """What training warned about this set (e.g. too little fit data), for the agent to
        repeat where the OT engineer installing it will read it; none for older sets."""
        return warning_list(self.metrics.get("warnings"))

    @property
    def trace(self) -> dict[str, str | int | None]:
        """The tracked run and registry version behind this set (None where untracked)."""
        t = self.tracking
        return {
            "run_id": None if t is None else t.run_id,
            "registered_model": None if t is None else t.registered_model,
            "registered_version": None if t is None else t.registered_version,
        }

    @property
    def status_trace(self) -> dict[str, str | int | list[str] | None]:
        """What the agent's retained status says about this set beyond its version: the
        training run behind it and what training warned about, so a console can show both."""
        return {**self.trace, "training_warnings": self.training_warnings}

    @property
    def sensor_names(self) -> list[str]:
        return [s.name for s in self.sensors]

    @property
    def feature_spec(self) -> FeatureSpec:
        return self.features.to_spec()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_json_schema() -> dict[str, Any]:
    return Manifest.model_json_schema()


def _one_line(error: ErrorDetails) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


def load_manifest(
    models_dir: Path | str,
    expected_sensors: list[str] | None = None,
    verify_files: bool = True,
) -> Manifest:
    """Read and verify a model set; raise :class:`ManifestError` listing every problem."""
    models_dir = Path(models_dir)
    path = models_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path.absolute()}: manifest not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from None
    if isinstance(raw, dict) and raw.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: format_version {raw.get('format_version')!r} is not supported "
            f"(this agent reads {FORMAT_VERSION})"
        )
    try:
        manifest = Manifest.model_validate(raw)
        manifest.feature_spec  # noqa: B018 - raises if the feature code disagrees
    except ValidationError as exc:  # pydantic's text spans lines: one line per problem
        raise ManifestError(
            [f"{path}: invalid manifest: {_one_line(e)}" for e in exc.errors(include_url=False)]
        ) from None
    except ValueError as exc:
        raise ManifestError(f"{path}: invalid manifest: {exc}") from None
    problems: list[str] = []
    if expected_sensors is not None and manifest.sensor_names != list(expected_sensors):
        problems.append(
            f"sensor list mismatch: model set has {manifest.sensor_names}, "
            f"configuration expects {list(expected_sensors)}"
        )
    if verify_files:
        for key, entry in manifest.models.items():
            file = models_dir / entry.file
            if not file.is_file():
                problems.append(f"model {key}: file {file} is missing")
                continue
            digest = sha256_file(file)
            if digest != entry.sha256:
                problems.append(
                    f"model {key}: checksum mismatch for {file} "
                    f"(manifest {entry.sha256[:12]}…, file {digest[:12]}…)"
                )
    if problems:
        raise ManifestError([f"{path}: {p}" for p in problems])
    return manifest
