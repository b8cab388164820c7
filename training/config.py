"""The training configuration (config/training.yaml + command-line overrides), validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.config import InstrumentRange
from edge_agent.pipeline.manifest import (
    VotingEntry,
)

from .data import DataSpec
from .model_set import MODEL_KEYS
from .tracking import TrackingSection


class TrainConfigError(ValueError):
    """An invalid training configuration; one line per bad key."""


# --- configuration ---------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Section):
    path: Path | None = None
    timestamp_column: str = "auto"
    #: One character, or auto: guessed from the file's head (as is the decimal mark).
    separator: str = Field(default="auto", min_length=1, max_length=4)
    decimal: Literal["auto", ".", ","] = "auto"
    #: auto, iso (ISO 8601 or Unix seconds) or a strptime format, e.g. "%d/%m/%Y %H:%M:%S".
    time_format: str = "auto"
    sensors: list[str] | None = None
    label_column: str | None = "auto"
    exclude: list[str] = Field(default_factory=list)
    step_seconds: float | None = Field(default=None, gt=0)
    max_gap_seconds: float = Field(default=5.0, ge=0)
    #: Instrument ranges (what a transmitter can report) for sensors without a known spec;
    #: readings outside them are impossible and rejected by the agent. Nothing else is.
    instrument_ranges: dict[str, InstrumentRange] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_character(self) -> DataSection:
        if self.separator != "auto" and len(self.separator) != 1:
            raise ValueError(f"separator must be one character or 'auto', got {self.separator!r}")
        return self

    def spec(self) -> DataSpec:
        return DataSpec(
            timestamp_column=self.timestamp_column,
            separator=self.separator,
            decimal=self.decimal,
            time_format=self.time_format,
            sensors=None if self.sensors is None else tuple(self.sensors),
            label_column=self.label_column,
            exclude=tuple(self.exclude),
            step_seconds=self.step_seconds,
            max_gap_seconds=self.max_gap_seconds,
        )


class SplitSection(_Section):
    #: Share of the steps at the end held out for evaluation; "auto": 0.2 when the data
    #: has labels (and no separate evaluation file is given), else 0 — every row fits.
    test: float | Literal["auto"] = "auto"

    @model_validator(mode="after")
    def _fraction(self) -> SplitSection:
        if self.test != "auto" and not 0 <= self.test < 1:
            raise ValueError("test must be 'auto' or a fraction in [0, 1)")
        return self


class CalibrationSection(_Section):
    #: Quantile of out-of-sample normal scores that each threshold is: the stated point
    #: false-alarm rate is 1 - quantile.
    quantile: float = Field(default=0.995, gt=0, lt=1)
    folds: int = Field(default=5, ge=2, le=20)
    #: k-fold up to this many fit windows, a hold-out above (0: always). k-fold costs about
    #: folds + 1 fits however long the export (each LSTM fit draws ``max_train_windows``, each
    #: tree ``max_samples``; scoring is seconds per 10,000 windows); the bound keeps the fifth
    #: of all windows one fold scores at once (1 M windows: 288 MB for 6 sensors) in memory.
    kfold_max_windows: int = Field(default=1_000_000, ge=0)
    holdout: float = Field(default=0.2, gt=0, lt=1)
    #: Last share of each model's training windows that stops the LSTM early.
    early_stopping_tail: float = Field(default=0.1, gt=0, lt=0.5)
    #: Stated false-alarm rate of the *alarms* (per unit per day of normal operation, with
    #: the agent's on_delay): raises the ensemble threshold where the point rate alone would
    #: alarm more often. null = the point rate only (see training.calibration).
    alarms_per_day: float | None = Field(default=None, gt=0)


class IForestSection(_Section):
    n_estimators: int = Field(default=200, ge=1)
    max_samples: int = Field(default=256, ge=2)
    contamination: float | Literal["auto"] = "auto"


class LstmSection(_Section):
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=64, ge=1)
    patience: int = Field(default=4, ge=1)
    max_train_windows: int | None = Field(default=5000, ge=1)


class SimulatorSection(_Section):
    steps: int = Field(default=100000, ge=1000)
    events: int = Field(default=60, ge=0)
    #: Out of sample for the demo and the tests, which simulate seeds 0..N.
    seed: int = 7
    day_seconds: float = Field(default=3600.0, gt=0)
    #: Units of the same design simulated one after another (steps and events are totals).
    units: int = Field(default=4, ge=1)


def _default_voting() -> VotingEntry:
    return VotingEntry(strategy="calibrated", weights={"iforest": 0.5, "lstm_ae": 0.5})


class TrainConfig(_Section):
    """Everything ``train`` needs; ``config/training.yaml`` documents every key."""

    seed: int = 0
    threads: int = Field(default=2, ge=1)
    output_dir: Path = Path("models")
    window: int = Field(default=60, ge=2)
    rolling: int = Field(default=10, ge=2)
    report: bool = True
    #: A separate labelled CSV (same columns) to evaluate on instead of a test part.
    eval_data: Path | None = None
    data: DataSection = Field(default_factory=DataSection)
    split: SplitSection = Field(default_factory=SplitSection)
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)
    iforest: IForestSection = Field(default_factory=IForestSection)
    lstm_ae: LstmSection = Field(default_factory=LstmSection)
    voting: VotingEntry = Field(default_factory=_default_voting)
    simulator: SimulatorSection = Field(default_factory=SimulatorSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.rolling > self.window:
            raise ValueError(f"rolling ({self.rolling}) cannot exceed window ({self.window})")
        unknown = set(self.voting.weights) - set(MODEL_KEYS)
        if unknown:
            raise ValueError(f"voting.weights names unknown models {sorted(unknown)}")
        return self


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg']}")
    return lines


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value


def load_config(path: Path | str | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (None: all defaults) and apply ``{"dotted.key": value}`` overrides.

    Overrides are applied before validation, so a bad command-line value is reported with
    its key just like a bad line in the file.
    """
    tree: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TrainConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TrainConfigError(f"{path}: cannot read: {exc}") from None
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise TrainConfigError(f"{path}: the top level must be a mapping of keys")
        tree = loaded
    for dotted, value in (overrides or {}).items():
        _set_path(tree, dotted, value)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        raise TrainConfigError(
            f"{where}: invalid configuration:\n  " + "\n  ".join(_error_lines(exc))
        ) from None


# --- progress and timing ---------------------------------------------------------------------
