"""Executable boundaries: the agent stays light, the pure data path stays pure.

Two house rules that no other test would notice breaking: ``edge_agent`` never imports the
training stack (TensorFlow, Keras, scikit-learn, skl2onnx, tf2onnx, ``training``), and
``edge_agent.pipeline`` (the h11-like core) imports no I/O library and nothing from the daemon
or the tools. Imports inside functions count too: a lazy ``import sklearn`` in a scoring path
is as heavy as one at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "edge_agent"
PIPELINE = AGENT / "pipeline"

TRAINING_STACK = {"tensorflow", "keras", "sklearn", "skl2onnx", "tf2onnx", "training"}
IO_MODULES = {
    "asyncio", "aiomqtt", "paho", "sqlite3", "socket", "ssl", "http", "urllib", "subprocess",
    "selectors", "aiohttp", "httpx", "requests", "sqlalchemy",
}  # fmt: skip
NOT_FROM_PIPELINE = ("edge_agent.daemon", "edge_agent.tools", "edge_agent.cli")


def imported_modules(source: str) -> set[str]:
    """Every absolute module an ``import`` or ``from … import`` anywhere in ``source`` names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def violations(source: str, forbidden_roots: set[str], forbidden_prefixes: tuple[str, ...] = ()):
    found = set()
    for name in imported_modules(source):
        if name.split(".")[0] in forbidden_roots or name.startswith(forbidden_prefixes):
            found.add(name)
    return found


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n    import sklearn.ensemble\n", {"sklearn.ensemble"}),
        ("from tensorflow import keras\n", {"tensorflow", "tensorflow.keras"}),
        ("import training.pipeline as p\n", {"training.pipeline"}),
        ("import numpy\nfrom edge_agent.pipeline import features\n", set()),
    ],
)
def test_the_scan_finds_lazy_and_aliased_imports(source: str, expected: set[str]) -> None:
    assert violations(source, TRAINING_STACK) == expected


def test_the_pure_path_scan_finds_io_and_daemon_imports() -> None:
    source = "import asyncio\nfrom edge_agent.daemon.outbox import Outbox\nimport numpy\n"
    found = violations(source, IO_MODULES, NOT_FROM_PIPELINE)
    assert found == {"asyncio", "edge_agent.daemon.outbox", "edge_agent.daemon.outbox.Outbox"}


@pytest.mark.parametrize("path", _modules(AGENT), ids=lambda p: str(p.relative_to(REPO)))
def test_agent_never_imports_the_training_stack(path: Path) -> None:
    assert violations(path.read_text("utf-8"), TRAINING_STACK) == set()


@pytest.mark.parametrize("path", _modules(PIPELINE), ids=lambda p: str(p.relative_to(REPO)))
def test_pure_data_path_imports_no_io(path: Path) -> None:
    assert violations(path.read_text("utf-8"), IO_MODULES, NOT_FROM_PIPELINE) == set()


def test_importing_every_agent_module_loads_no_training_stack() -> None:
    """The static scan misses imports made by the agent's own dependencies; this does not."""
    code = (
        "import importlib, pkgutil, sys, edge_agent\n"
        "for m in pkgutil.walk_packages(edge_agent.__path__, 'edge_agent.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(TRAINING_STACK)!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
