#!/usr/bin/env python3
"""Prove every agent dependency installs from a binary wheel on 64-bit ARM (Dockerfile.arm64).

Resolves the project's *base* dependencies (pyproject.toml; no extras) for Linux aarch64 and
CPython 3.11 with ``--only-binary=:all:`` and ``pip install --dry-run --report``: nothing is
installed. Where the index serves wheel metadata separately (PEP 658, as PyPI does) pip reads
only that; an index without it makes pip fetch the wheels into its cache (~45 MB).

Prints each resolved package with its wheel's platform tag. Exits 1 when pip cannot resolve
(some package has no aarch64 wheel) or a resolved wheel is not for aarch64 or pure Python.

    python scripts/check_arm64_wheels.py [--glibc 2.36] [--python-version 3.11] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parents[1]
#: Debian 12 (python:3.11-slim-bookworm, the image's base) ships glibc 2.36.
DEFAULT_GLIBC = "2.36"


def base_dependencies(pyproject: Path) -> list[str]:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    deps: list[str] = data["project"]["dependencies"]
    return deps


def platform_tags(glibc: str) -> list[str]:
    """Every manylinux tag a glibc-``glibc`` aarch64 system accepts (pip does not expand them)."""
    major, minor = (int(p) for p in glibc.split("."))
    if major != 2 or minor < 17:
        raise ValueError("aarch64 manylinux starts at glibc 2.17")
    tags = [f"manylinux_2_{m}_aarch64" for m in range(minor, 16, -1)]
    return [*tags, "manylinux2014_aarch64"]


def resolve(requirements: list[str], glibc: str, python_version: str) -> dict[str, Any]:
    """pip's installation report for ``requirements`` on linux/aarch64, without installing."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable, "-m", "pip", "install",
            "--dry-run", "--ignore-installed", "--quiet",
            "--target", str(Path(tmp) / "target"),
            "--report", str(report),
            "--only-binary=:all:",
            "--python-version", python_version,
            "--implementation", "cp",
            *(arg for tag in platform_tags(glibc) for arg in ("--platform", tag)),
            *requirements,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ResolutionError(done.stderr.strip() or done.stdout.strip())
        result: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
        return result


class ResolutionError(RuntimeError):
    """pip found no aarch64 wheel for some requirement."""


def wheel_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for item in report["install"]:
        meta = item["metadata"]
        filename = unquote(Path(urlparse(item["download_info"]["url"]).path).name)
        if filename.endswith(".whl"):
            python_tag, abi_tag, platform_tag = filename[: -len(".whl")].split("-")[-3:]
        else:
            python_tag = abi_tag = platform_tag = "(not a wheel)"
        rows.append(
            {
                "name": meta["name"],
                "version": meta["version"],
                "python": python_tag,
                "abi": abi_tag,
                "platform": platform_tag,
                "file": filename,
            }
        )
    return sorted(rows, key=lambda r: r["name"].lower())


def is_arm64_compatible(row: dict[str, str]) -> bool:
    return row["platform"] == "any" or all("aarch64" in tag for tag in row["platform"].split("."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", type=Path, default=REPO / "pyproject.toml")
    parser.add_argument("--glibc", default=DEFAULT_GLIBC, help="target glibc (%(default)s)")
    parser.add_argument("--python-version", default="3.11")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    requirements = base_dependencies(args.pyproject)
    try:
        report = resolve(requirements, args.glibc, args.python_version)
    except ResolutionError as exc:
        print(f"FAIL: no aarch64 wheels for all of {requirements}:\n{exc}", file=sys.stderr)
        return 1
    rows = wheel_rows(report)
    bad = [r for r in rows if not is_arm64_compatible(r)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(f"{r['name']} {r['version']}") for r in rows)
        for r in rows:
            mark = "BAD" if r in bad else "ok "
            package = f"{r['name']} {r['version']}"
            print(f"{mark} {package:<{width}}  {r['python']}-{r['abi']}-{r['platform']}")
    if bad:
        names = ", ".join(r["name"] for r in bad)
        print(f"FAIL: not aarch64 wheels: {names}", file=sys.stderr)
        return 1
    print(f"all {len(rows)} packages have linux/aarch64 wheels", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
