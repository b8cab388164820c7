"""Rebuild ``edge_agent/data/gppd_india_thermal.csv`` from the WRI Global Power Plant Database.

The extract ships with the package (the simulator's real plants); this script is only for
regenerating it: ``python scripts/build_gppd_extract.py [--source CSV]`` (default source:
``../shared/data/gppd/database_IND.csv`` beside the checkout).

Kept: India's thermal plants (primary fuel Coal, Gas or Oil) with capacity >= 1 MW and a
non-zero location; columns name, gppd_idnr, fuel, capacity_mw, commissioning_year, latitude,
longitude. Licence CC BY 4.0: the attribution and the list of changes are written beside it.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "gppd" / "database_IND.csv"
OUT = REPO / "edge_agent" / "data" / "gppd_india_thermal.csv"
FUELS = {"Coal": "coal", "Gas": "gas", "Oil": "oil"}
COLUMNS = [
    "name", "gppd_idnr", "fuel", "capacity_mw", "commissioning_year", "latitude", "longitude",
]  # fmt: skip
ATTRIBUTION = """# Attribution

`gppd_india_thermal.csv` is derived from:

> Global Power Plant Database v1.3.0, World Resources Institute, 2021 — CC BY 4.0

(India source table `database_IND.csv`; licence: Creative Commons Attribution 4.0
International, https://creativecommons.org/licenses/by/4.0/).

Changes made: kept only the plants whose primary fuel is Coal, Gas or Oil, with capacity
>= 1 MW and a non-zero latitude and longitude ({count} plants: {by_fuel}); kept the
columns name, gppd_idnr, primary_fuel (renamed `fuel`, lower case), capacity_mw,
commissioning_year (an integer year, empty where unknown), latitude, longitude; sorted by
fuel, then capacity (largest first), then name. Regenerate with
`scripts/build_gppd_extract.py`.
"""


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def build(source: Path, out: Path) -> dict[str, int]:
    with source.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    kept = []
    for r in rows:
        fuel = FUELS.get(r["primary_fuel"])
        capacity, lat, lon = (_number(r[k]) for k in ("capacity_mw", "latitude", "longitude"))
        if fuel is None or capacity is None or capacity < 1 or not lat or not lon:
            continue
        year = _number(r["commissioning_year"])
        kept.append(
            {
                "name": r["name"].strip(),
                "gppd_idnr": r["gppd_idnr"].strip(),
                "fuel": fuel,
                "capacity_mw": f"{capacity:g}",
                "commissioning_year": "" if year is None else str(int(year)),
                "latitude": f"{lat:.4f}",
                "longitude": f"{lon:.4f}",
            }
        )
    order = list(FUELS.values())
    kept.sort(key=lambda p: (order.index(p["fuel"]), -float(p["capacity_mw"]), p["name"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
    counts = {f: sum(p["fuel"] == f for p in kept) for f in order}
    by_fuel = ", ".join(f"{f} {n}" for f, n in counts.items())
    (out.parent / "GPPD-ATTRIBUTION.md").write_text(
        ATTRIBUTION.format(count=len(kept), by_fuel=by_fuel), encoding="utf-8"
    )
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=SOURCE)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    counts = build(args.source, args.out)
    print(f"wrote {args.out}: {sum(counts.values())} plants {counts}")


if __name__ == "__main__":
    main()
