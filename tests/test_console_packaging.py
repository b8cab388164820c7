"""The console stays out of the agent: own package, own extra, never imported by edge_agent."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

from harness import REPO

CONSOLE_ONLY = ("edge_console", "nicegui", "sqlalchemy", "psycopg", "pwdlib", "fastapi")


def test_edge_agent_never_imports_the_console_or_its_libraries() -> None:
    for path in sorted((REPO / "edge_agent").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in CONSOLE_ONLY, f"{path.name} imports {name}"


def test_agent_import_and_demo_cli_load_none_of_the_console() -> None:
    code = (
        "import sys, edge_agent.cli, edge_agent.tools.demo, edge_agent.daemon.server;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {CONSOLE_ONLY!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_console_has_its_own_extra_and_script() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = " ".join(project["dependencies"]).lower()
    for lib in ("nicegui", "sqlalchemy", "psycopg", "pwdlib"):
        assert lib not in base
        assert any(lib in d.lower() for d in project["optional-dependencies"]["console"])
    assert project["scripts"]["edge-console"] == "edge_console.cli:main"
