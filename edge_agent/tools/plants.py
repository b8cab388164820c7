"""Real thermal plants (WRI Global Power Plant Database, India) and the unit design of each.

The simulator's reference unit is a 600 MW coal unit; :func:`unit_design` turns a real
plant into the design of one of its units, so simulated data has realistic ratings, steam
conditions and flows for that plant. Data: ``edge_agent/data/gppd_india_thermal.csv``
(338 plants, CC BY 4.0 — see ``GPPD-ATTRIBUTION.md`` beside it), built from the database by
``scripts/build_gppd_extract.py``.

Physics (simple, standard figures; every number below is a design choice, not plant data):

* **Units per plant.** A plant of ``C`` MW is ``ceil(C / max unit)`` equal units (largest
  unit: coal 660 MW, gas 400 MW combined-cycle block, oil 120 MW); the largest plant,
  VINDH_CHAL STPS (4,760 MW), becomes 8 units of 595 MW.
* **Load range.** Ratings, daily demand, set-point changes, the minimum load (coal 5/12 of
  the rating, gas 1/2, oil 1/3) and the load and flow noise scale with the unit rating.
* **Steam.** Coal and oil units are steam (Rankine) units: full-load main steam pressure and
  temperature rise with unit size (small captive units ~90 bar/510 °C, 210 MW 150 bar/537 °C,
  600 MW 160 bar/542 °C, supercritical 660 MW+ 242 bar/565 °C), with sliding pressure.
  Gas units are combined-cycle blocks whose steam comes from a heat-recovery boiler: lower
  pressure (45-110 bar) and about 0.3 kg/s of feedwater per MW of block output (the steam
  turbine makes about a third of it) against 0.8 kg/s per MW for coal.
* **Flue gas.** Coal 112-137 °C after the economiser; gas (no sulphur: no acid dew point to
  stay above) 88-98 °C at the stack; heavy fuel oil (high sulphur) 150-170 °C.

The default design (:data:`REFERENCE_DESIGN`) reproduces the original simulator exactly.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import numpy as np

Fuel = Literal["coal", "gas", "oil"]
FUELS: tuple[Fuel, ...] = ("coal", "gas", "oil")
DATA_FILE = "gppd_india_thermal.csv"
ATTRIBUTION = (
    "Global Power Plant Database v1.3.0, World Resources Institute, 2021 — CC BY 4.0 "
    "(extract: India's coal, gas and oil plants >= 1 MW)"
)
REFERENCE_MW = 600.0
MAX_UNIT_MW: dict[str, float] = {"coal": 660.0, "gas": 400.0, "oil": 120.0}

# Full-load main steam pressure (bar) and temperature (degC) by unit rating (MW).
_STEAM_RATING = [10.0, 60.0, 120.0, 210.0, 500.0, 600.0, 659.0, 660.0, 800.0]
_STEAM_BAR = [45.0, 90.0, 130.0, 150.0, 158.0, 160.0, 162.0, 242.0, 242.0]
_STEAM_DEGC = [480.0, 510.0, 535.0, 537.0, 540.0, 542.0, 542.0, 565.0, 565.0]
_HRSG_RATING = [10.0, 100.0, 400.0]
_HRSG_BAR = [45.0, 70.0, 110.0]
_HRSG_DEGC = [480.0, 520.0, 560.0]


@dataclass(frozen=True)
class Plant:
    """One plant of the extract."""

    name: str
    gppd_id: str
    fuel: Fuel
    capacity_mw: float
    commissioning_year: int | None
    latitude: float
    longitude: float

    @property
    def units(self) -> int:
        """Number of equal units the plant is simulated as."""
        return max(1, math.ceil(self.capacity_mw / MAX_UNIT_MW[self.fuel] - 1e-9))

    @property
    def unit_mw(self) -> float:
        return self.capacity_mw / self.units

    @property
    def slug(self) -> str:
        """The name as an MQTT topic level / agent ``plant`` id: ``[A-Za-z0-9_.-]+``."""
        out = "".join(c if c.isalnum() else "_" for c in self.name.lower())
        return "_".join(p for p in out.split("_") if p) or self.gppd_id.lower()


@dataclass(frozen=True)
class UnitDesign:
    """Everything the simulator's process model needs to know about one unit.

    Steady state at per-unit load ``pu`` = load / rated_mw (``ambient`` in -1..1):
    steam temperature ``steam_temp_base + steam_temp_slope * pu``, pressure
    ``pressure_base + pressure_slope * pu``, feedwater ``flow_per_mw * load``, flue gas
    ``flue_base + flue_slope * pu + 3 * ambient``.
    """

    rated_mw: float = REFERENCE_MW
    min_load_mw: float = 250.0
    fuel: Fuel = "coal"
    steam_temp_base: float = 528.0
    steam_temp_slope: float = 14.0
    pressure_base: float = 55.0
    pressure_slope: float = 105.0
    flow_per_mw: float = 0.8
    flue_base: float = 112.0
    flue_slope: float = 25.0
    plant: str | None = None  # the real plant's name, None for the reference unit

    @property
    def load_scale(self) -> float:
        """Multiplies every MW quantity of the reference unit (1.0 for it)."""
        return self.rated_mw / REFERENCE_MW

    @property
    def flow_scale(self) -> float:
        """Multiplies every kg/s quantity of the reference unit (1.0 for it)."""
        return self.load_scale * self.flow_per_mw / 0.8


def design_for_unit(rated_mw: float, fuel: Fuel = "coal", plant: str | None = None) -> UnitDesign:
    """The design of a ``rated_mw`` unit burning ``fuel`` (see the module docstring)."""
    if not rated_mw > 0:
        raise ValueError(f"unit rating must be positive, got {rated_mw}")
    if fuel not in FUELS:
        raise ValueError(f"fuel must be one of {FUELS}, got {fuel!r}")
    if fuel == "gas":
        p_full = float(np.interp(rated_mw, _HRSG_RATING, _HRSG_BAR))
        t_full = float(np.interp(rated_mw, _HRSG_RATING, _HRSG_DEGC))
        flow, flue, min_load = 0.3, (88.0, 10.0), rated_mw / 2
    else:
        p_full = float(np.interp(rated_mw, _STEAM_RATING, _STEAM_BAR))
        t_full = float(np.interp(rated_mw, _STEAM_RATING, _STEAM_DEGC))
        flow = 0.8
        flue = (112.0, 25.0) if fuel == "coal" else (150.0, 20.0)
        min_load = rated_mw * 5 / 12 if fuel == "coal" else rated_mw / 3
    return UnitDesign(
        rated_mw=float(rated_mw),
        min_load_mw=float(min_load),
        fuel=fuel,
        steam_temp_base=t_full - 14.0,
        steam_temp_slope=14.0,
        # sliding pressure: 11/32 of full-load pressure at zero load (55 of 160 bar)
        pressure_base=p_full * 11 / 32,
        pressure_slope=p_full * 21 / 32,
        flow_per_mw=flow,
        flue_base=flue[0],
        flue_slope=flue[1],
        plant=plant,
    )


#: The original simulator's unit: 600 MW coal, 160 bar / 542 degC at full load.
REFERENCE_DESIGN = design_for_unit(REFERENCE_MW, "coal")


def unit_design(plant: Plant) -> UnitDesign:
    """The design of one unit of ``plant``."""
    return design_for_unit(plant.unit_mw, plant.fuel, plant.name)


# --- the catalogue -------------------------------------------------------------------------


@cache
def load_plants() -> tuple[Plant, ...]:
    """Every plant of the shipped extract, in file order (fuel, then largest first)."""
    text = resources.files("edge_agent").joinpath("data", DATA_FILE).read_text("utf-8")
    plants = []
    for row in csv.DictReader(text.splitlines()):
        year = row["commissioning_year"]
        plants.append(
            Plant(
                name=row["name"],
                gppd_id=row["gppd_idnr"],
                fuel=row["fuel"],  # type: ignore[arg-type]  # the builder writes FUELS only
                capacity_mw=float(row["capacity_mw"]),
                commissioning_year=int(year) if year else None,
                latitude=float(row["latitude"]),
                longitude=float(row["longitude"]),
            )
        )
    return tuple(plants)


def find_plant(key: str) -> Plant:
    """A plant by GPPD id or name (case-insensitive; a unique part of the name will do)."""
    wanted = " ".join(key.split()).casefold()
    plants = load_plants()
    for p in plants:
        if wanted in (p.gppd_id.casefold(), " ".join(p.name.split()).casefold(), p.slug):
            return p
    partial = [p for p in plants if wanted in p.name.casefold()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        names = ", ".join(p.name for p in partial[:8])
        raise ValueError(f"plant {key!r} is ambiguous: {names}{' …' if len(partial) > 8 else ''}")
    raise ValueError(f"no plant {key!r} in the GPPD extract (name or id, e.g. IND0000503)")


def plants_of_fuel(fuel: str) -> list[Plant]:
    if fuel not in FUELS:
        raise ValueError(f"fuel must be one of {FUELS}, got {fuel!r}")
    return [p for p in load_plants() if p.fuel == fuel]


def pick_plants(fuel: str, count: int, seed: int = 0) -> list[Plant]:
    """``count`` different plants of ``fuel``, a seeded random choice (repeats only when
    more are asked for than exist)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    pool = plants_of_fuel(fuel)
    rng = np.random.default_rng([seed, 31])
    order = [int(i) for i in rng.permutation(len(pool))]
    return [pool[order[i % len(pool)]] for i in range(count)]
