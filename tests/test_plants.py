"""The shipped GPPD extract and the unit designs the simulator derives from real plants."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.tools.plants import (
    REFERENCE_DESIGN,
    design_for_unit,
    find_plant,
    load_plants,
    pick_plants,
    unit_design,
)
from edge_agent.tools.simulator import ThermalUnitSimulator, generate_fleet

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "edge_agent" / "data"
GPPD_SOURCE = REPO.parent / "shared" / "data" / "gppd" / "database_IND.csv"


def test_extract_has_the_thermal_plants_of_india() -> None:
    plants = load_plants()
    counts = {f: sum(p.fuel == f for p in plants) for f in ("coal", "gas", "oil")}
    assert len(plants) == 338 and counts == {"coal": 253, "gas": 68, "oil": 17}
    assert all(p.capacity_mw >= 1 and p.latitude and p.longitude for p in plants)
    assert len({p.gppd_id for p in plants}) == 338
    largest = max(plants, key=lambda p: p.capacity_mw)
    assert (largest.name, largest.fuel, largest.capacity_mw) == ("VINDH_CHAL STPS", "coal", 4760)
    assert largest.commissioning_year == 2002
    assert (largest.latitude, largest.longitude) == (24.0983, 82.6719)


def test_attribution_ships_beside_the_extract() -> None:
    text = (DATA / "GPPD-ATTRIBUTION.md").read_text()
    assert "Global Power Plant Database v1.3.0, World Resources Institute, 2021" in text
    assert "CC BY 4.0" in text and "Changes made" in text
    with (DATA / "gppd_india_thermal.csv").open() as fh:
        assert next(csv.reader(fh)) == [
            "name", "gppd_idnr", "fuel", "capacity_mw", "commissioning_year", "latitude",
            "longitude",
        ]  # fmt: skip


@pytest.mark.skipif(not GPPD_SOURCE.is_file(), reason="GPPD source table not beside the checkout")
def test_build_script_regenerates_the_shipped_extract(tmp_path: Path) -> None:
    out = tmp_path / "extract.csv"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_gppd_extract.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    shipped = DATA / "gppd_india_thermal.csv"
    assert (
        hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(shipped.read_bytes()).digest()
    )


def test_find_plant_by_id_name_or_unique_part() -> None:
    assert find_plant("IND0000503").name == "VINDH_CHAL STPS"
    assert find_plant("vindh_chal stps").gppd_id == "IND0000503"
    assert find_plant("VINDH_CHAL").gppd_id == "IND0000503"
    with pytest.raises(ValueError, match="ambiguous"):
        find_plant("MUNDRA")
    with pytest.raises(ValueError, match="no plant"):
        find_plant("no such plant")


def test_pick_plants_is_seeded_and_of_one_fuel() -> None:
    a = pick_plants("gas", 5, seed=3)
    assert a == pick_plants("gas", 5, seed=3) and len({p.gppd_id for p in a}) == 5
    assert all(p.fuel == "gas" for p in a)
    assert a != pick_plants("gas", 5, seed=4)


def test_reference_design_is_the_original_unit() -> None:
    d = REFERENCE_DESIGN
    assert (d.rated_mw, d.min_load_mw, d.pressure_base + d.pressure_slope) == (600, 250, 160)
    assert d.steam_temp_base + d.steam_temp_slope == 542 and d.flow_per_mw == 0.8
    # a real plant with 600 MW coal units is simulated exactly like the reference unit
    assert unit_design(find_plant("K_GUDEM NEW")) == design_for_unit(600, "coal", "K_GUDEM NEW")
    assert design_for_unit(600, "coal") == REFERENCE_DESIGN


def test_default_simulation_is_unchanged() -> None:
    """The shipped models were trained on the reference unit: its data must not move."""
    default = ThermalUnitSimulator(seed=5, day_seconds=3600).generate(3000)
    explicit = ThermalUnitSimulator(seed=5, day_seconds=3600, design=REFERENCE_DESIGN)
    assert np.array_equal(default.values, explicit.generate(3000).values)
    assert default.values[:, 4].max() <= 600 + 15  # load around a 600 MW rating


def _means(design: object, steps: int = 20000) -> dict[str, float]:
    r = ThermalUnitSimulator(seed=2, day_seconds=3600, design=design).generate(steps)  # type: ignore[arg-type]
    return dict(zip(r.sensor_names, r.values[1800:].mean(axis=0).tolist(), strict=True))


def test_big_coal_unit_differs_from_small_gas_unit_where_physics_says() -> None:
    big = find_plant("VINDH_CHAL STPS")
    small = find_plant("VALANTHARVI GT")  # 52.8 MW gas
    coal, gas = unit_design(big), unit_design(small)
    assert big.units == 8 and coal.rated_mw == pytest.approx(595)
    assert small.units == 1 and gas.rated_mw == pytest.approx(52.8)
    c, g = _means(coal), _means(gas)
    # load and flows scale with the rating
    assert c["load"] / g["load"] == pytest.approx(595 / 52.8, rel=0.05)
    assert 0.75 < c["feedwater_flow"] / c["load"] < 0.85  # 0.8 kg/s per MW, steam unit
    assert 0.25 < g["feedwater_flow"] / g["load"] < 0.35  # HRSG of a combined cycle
    # steam conditions: a large steam unit runs hotter and at far higher pressure
    assert c["steam_pressure"] > 2 * g["steam_pressure"]
    assert c["steam_temperature"] > g["steam_temperature"] + 20
    # no sulphur in gas: the stack runs cooler than a coal unit's
    assert g["flue_gas_temperature"] < c["flue_gas_temperature"] - 20
    # the turbine-hall side does not care about the fuel or size in this model
    for sensor in ("condenser_vacuum", "bearing_temperature", "turbine_vibration"):
        assert g[sensor] == pytest.approx(c[sensor], rel=0.05)


def test_small_unit_faults_are_sized_to_the_unit() -> None:
    gas = design_for_unit(50, "gas")
    r = ThermalUnitSimulator(seed=1, design=gas).generate(4000)
    assert r.values[:, 4].max() < 60 and r.values[:, 2].max() < 25  # MW, kg/s of 50 MW


def test_fleet_of_different_plants() -> None:
    plants = pick_plants("coal", 3, seed=0)
    r = generate_fleet(3, 9000, 0, seed=1, designs=[unit_design(p) for p in plants])
    per_unit = [r.values[i * 3000 : (i + 1) * 3000, 4].mean() for i in range(3)]
    for mean, p in zip(per_unit, plants, strict=True):
        assert 0.4 * p.unit_mw < mean <= p.unit_mw


def test_edge_train_generate_for_a_plant_and_for_a_fuel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main

    out = tmp_path / "gas.csv"
    assert main(["generate", "--out", str(out), "--steps", "4000", "--events", "2",
                 "--plant", "IND0000494", "--units", "1"]) == 0  # fmt: skip
    assert "VALANTHARVI GT" in capsys.readouterr().out
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    load = np.array([float(r["load"]) for r in rows])
    assert 0.4 * 52.8 < load.mean() < 52.8 + 2
    assert main(["generate", "--out", str(tmp_path / "f.csv"), "--steps", "4000",
                 "--events", "2", "--fuel", "oil", "--units", "2"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.startswith("oil plants: ")
    named = [p.name for p in load_plants() if p.fuel == "oil" and p.name in printed]
    assert len(named) >= 2
    assert main(["generate", "--out", str(tmp_path / "x.csv"), "--plant", "no such"]) == 2
    assert "no plant 'no such'" in capsys.readouterr().err
