"""Installed size: the on-disk dependency closure of a set of distributions, and a fresh venv.

The closure is read from the running environment (importlib.metadata: each distribution's
RECORD files plus their ``__pycache__``); ``fresh_venv_size`` installs the agent alone (no
extras, ``pip install .`` from PyPI) into a new venv and measures its site-packages.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results

#: The seed design's packages (its installed closure is the comparison).
SEED_REQUIREMENTS = ("aiomqtt", "numpy", "tensorflow-cpu", "keras", "scikit-learn", "PyYAML")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def dependency_closure(roots: list[str], root_extras: tuple[str, ...] = ()) -> dict[str, str]:
    """``{normalised name: version}`` of ``roots`` and everything they require (installed)."""
    from packaging.requirements import Requirement

    seen: dict[str, str] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(r, root_extras) for r in roots]
    while todo:
        name, extras = todo.pop()
        dist = _dist(name)
        if dist is None or _norm(dist.metadata["Name"]) in seen:
            continue
        seen[_norm(dist.metadata["Name"])] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(e) for e in envs):
                continue
            todo.append((req.name, tuple(req.extras)))
    return seen


def installed_bytes(name: str) -> int:
    """On-disk bytes of one installed distribution: its RECORD files and their __pycache__."""
    dist = _dist(name)
    if dist is None:
        return 0
    total = 0
    dirs: set[Path] = set()
    for f in dist.files or []:
        path = Path(str(dist.locate_file(f)))
        try:
            total += path.stat().st_size
        except OSError:
            continue
        if path.suffix == ".py":
            dirs.add(path.parent / "__pycache__")
    recorded = {Path(str(dist.locate_file(f))) for f in dist.files or []}
    for d in dirs:
        if d.is_dir():
            for p in d.iterdir():
                if p not in recorded:
                    with contextlib.suppress(OSError):
                        total += p.stat().st_size
    return total


def closure_size(roots: list[str]) -> dict[str, Any]:
    names = dependency_closure(roots)
    sizes = {n: installed_bytes(n) for n in names}
    return {
        "roots": roots,
        "packages": {
            n: {"version": names[n], "mb": sizes[n] / 2**20}
            for n in sorted(sizes, key=lambda k: -sizes[k])
        },
        "total_mb": sum(sizes.values()) / 2**20,
    }


def fresh_venv_size(work: Path) -> dict[str, Any]:
    """Install the agent alone (no extras) into a new venv; site-packages size minus pip."""
    venv = work / "agent-venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # A copy of the project's sources: building in the working tree would leave build/ there.
    src = work / "agent-src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("edge_agent", "training"):
        if (results.REPO / name).is_dir():
            shutil.copytree(results.REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (results.REPO / name).is_file():
            shutil.copy2(results.REPO / name, src / name)
    if not (src / "README.md").is_file():
        (src / "README.md").write_text("edge-agent\n")
    proc = subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--timeout",
            "20",
            "--retries",
            "1",
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-500:]}
    site = next((venv / "lib").glob("python*/site-packages"))
    total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    pip_like = sum(
        p.stat().st_size
        for d in site.iterdir()
        if d.name.startswith(("pip", "setuptools", "_distutils_hack", "distutils-precedence"))
        for p in ([d] if d.is_file() else d.rglob("*"))
        if p.is_file()
    )
    return {
        "site_packages_mb": total / 2**20,
        "without_pip_mb": (total - pip_like) / 2**20,
        "install_seconds": time.monotonic() - t0,
        "executable": str(venv / "bin" / "edge-agent"),
        "packages": sorted(
            d.name.split("-")[0] for d in site.iterdir() if d.name.endswith(".dist-info")
        ),
    }
