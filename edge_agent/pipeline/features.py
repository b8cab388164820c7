"""Feature engineering: the one definition used by training and the agent alike.

Features for a step are computed from the window of readings that ends at that step,
so the agent (which holds a ring buffer) and training (which slides over a whole series)
call the same function on the same shape of data and cannot drift apart.

Per sensor: last value, rolling mean, rolling std, the deviation of the last value from
the rolling mean and (feature version 2) the *roughness* — the standard deviation of the
step-to-step changes — over the last ``rolling`` steps. Roughness is what the forest sees
and the autoencoder (which reconstructs a smoothed window) misses: a noise burst doubles
it, a stuck transmitter drops it to zero. Derived thermal-plant features are added only
when the sensors they need are present, so a foreign sensor set (SKAB) simply gets the
generic features. Version 1 model sets (no roughness) are still computed as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]

_EPS = 1e-6
_KELVIN = 273.15


def _steam_enthalpy(c: dict[str, FloatArray]) -> FloatArray:
    """Superheated-steam specific enthalpy in kJ/kg, linear approximation in T [degC], P [bar].

    Good to a few percent for 450–600 degC and 100–200 bar: enough to couple the two
    readings the way the physics does, which is all an anomaly detector needs.
    """
    return 2501.0 + 1.996 * c["steam_temperature"] - 0.5 * c["steam_pressure"]


def _flue_to_steam_temperature_ratio(c: dict[str, FloatArray]) -> FloatArray:
    return (c["flue_gas_temperature"] + _KELVIN) / (c["steam_temperature"] + _KELVIN)


def _bearing_to_steam_temperature_ratio(c: dict[str, FloatArray]) -> FloatArray:
    return (c["bearing_temperature"] + _KELVIN) / (c["steam_temperature"] + _KELVIN)


def _vibration_to_load(c: dict[str, FloatArray]) -> FloatArray:
    return c["turbine_vibration"] / np.maximum(c["load"], 1.0)


def _pressure_to_flow(c: dict[str, FloatArray]) -> FloatArray:
    return c["steam_pressure"] / np.maximum(c["feedwater_flow"], 1.0)


@dataclass(frozen=True)
class DerivedFeature:
    name: str
    needs: tuple[str, ...]
    fn: Callable[[dict[str, FloatArray]], FloatArray]


DERIVED_FEATURES: dict[str, DerivedFeature] = {
    f.name: f
    for f in (
        DerivedFeature("steam_enthalpy", ("steam_temperature", "steam_pressure"), _steam_enthalpy),
        DerivedFeature(
            "flue_to_steam_temperature_ratio",
            ("flue_gas_temperature", "steam_temperature"),
            _flue_to_steam_temperature_ratio,
        ),
        DerivedFeature(
            "bearing_to_steam_temperature_ratio",
            ("bearing_temperature", "steam_temperature"),
            _bearing_to_steam_temperature_ratio,
        ),
        DerivedFeature("vibration_to_load", ("turbine_vibration", "load"), _vibration_to_load),
        DerivedFeature("pressure_to_flow", ("steam_pressure", "feedwater_flow"), _pressure_to_flow),
    )
}

#: Per-sensor feature kinds by feature version.
PER_SENSOR_KINDS: dict[int, tuple[str, ...]] = {
    1: ("value", "mean", "std", "delta"),
    2: ("value", "mean", "std", "delta", "roughness"),
}
FEATURE_VERSION = 2


@dataclass(frozen=True)
class FeatureSpec:
    """What the Isolation Forest sees; stored in the manifest so the agent rebuilds it exactly."""

    sensors: tuple[str, ...]
    rolling: int = 10
    derived: tuple[str, ...] = field(default_factory=tuple)
    version: int = 1

    def __post_init__(self) -> None:
        if self.version not in PER_SENSOR_KINDS:
            raise ValueError(
                f"feature version {self.version} is not known to this agent "
                f"(knows {sorted(PER_SENSOR_KINDS)})"
            )
        if self.rolling < 2:
            raise ValueError("rolling must be >= 2 (a standard deviation needs two points)")
        unknown = [d for d in self.derived if d not in DERIVED_FEATURES]
        if unknown:
            raise ValueError(f"unknown derived features: {unknown}")
        for d in self.derived:
            missing = [s for s in DERIVED_FEATURES[d].needs if s not in self.sensors]
            if missing:
                raise ValueError(f"derived feature {d!r} needs sensors {missing}")

    @property
    def kinds(self) -> tuple[str, ...]:
        return PER_SENSOR_KINDS[self.version]

    @property
    def names(self) -> list[str]:
        per_sensor = [f"{s}__{kind}" for s in self.sensors for kind in self.kinds]
        return per_sensor + list(self.derived)

    @property
    def n_features(self) -> int:
        return len(self.sensors) * len(self.kinds) + len(self.derived)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sensors": list(self.sensors),
            "rolling": self.rolling,
            "derived": list(self.derived),
            "names": self.names,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        spec = cls(
            sensors=tuple(data["sensors"]),
            rolling=int(data["rolling"]),
            derived=tuple(data.get("derived", ())),
            version=int(data.get("version", 1)),
        )
        if "names" in data and list(data["names"]) != spec.names:
            raise ValueError("feature names in the spec do not match this agent's feature code")
        return spec


def default_feature_spec(sensors: Sequence[str], rolling: int = 10) -> FeatureSpec:
    """Every derived feature whose sensors are all present, in a fixed order."""
    present = set(sensors)
    derived = tuple(d.name for d in DERIVED_FEATURES.values() if present.issuperset(d.needs))
    return FeatureSpec(
        sensors=tuple(sensors), rolling=rolling, derived=derived, version=FEATURE_VERSION
    )


def compute_features(windows: NDArray[np.floating[Any]], spec: FeatureSpec) -> Float32Array:
    """Features for a batch of windows.

    ``windows`` has shape (batch, steps, n_sensors) with steps >= spec.rolling, oldest
    step first; only the last ``rolling`` steps are used. Returns (batch, n_features)
    float32, the dtype the ONNX Isolation Forest takes.
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3 or w.shape[2] != len(spec.sensors):
        raise ValueError(
            f"windows must have shape (batch, steps, {len(spec.sensors)}), got {w.shape}"
        )
    if w.shape[1] < spec.rolling:
        raise ValueError(f"windows need at least {spec.rolling} steps, got {w.shape[1]}")
    tail = w[:, -spec.rolling :, :]
    last = tail[:, -1, :]
    mean = tail.mean(axis=1)
    std = tail.std(axis=1)
    delta = last - mean
    batch, n_sensors = last.shape
    parts = [last, mean, std, delta]
    if spec.version >= 2:
        parts.append(np.diff(tail, axis=1).std(axis=1))
    per_sensor = np.stack(parts, axis=2).reshape(batch, n_sensors * len(parts))
    if not spec.derived:
        return per_sensor.astype(np.float32)
    columns = {name: last[:, i] for i, name in enumerate(spec.sensors)}
    derived = np.stack([DERIVED_FEATURES[d].fn(columns) for d in spec.derived], axis=1)
    return np.concatenate([per_sensor, derived], axis=1).astype(np.float32)


def compute_series_features(series: NDArray[np.floating[Any]], spec: FeatureSpec) -> Float32Array:
    """Features for every step of a (n_steps, n_sensors) series that has a full rolling window.

    Row i of the result belongs to step ``i + rolling - 1`` of the series.
    """
    # float32 first: the agent's ring buffer holds float32, so training must see the same values.
    x = np.asarray(series, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"series must be 2-D (steps, sensors), got {x.shape}")
    if x.shape[0] < spec.rolling:
        return np.empty((0, spec.n_features), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(x, spec.rolling, axis=0)
    # sliding_window_view puts the window axis last: (n, sensors, rolling) -> (n, rolling, sensors)
    return compute_features(view.transpose(0, 2, 1), spec)
