"""The systemd unit: what the agent relies on is there, the sandbox scores <= 2.0, it verifies."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

from edge_agent.config import load_settings

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edge-agent.service"
SYSTEMD_UNITS = Path("/usr/lib/systemd/system")


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value given (systemd allows repeating a key)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        sections[section][key.strip()].append(value.strip())
    return sections


def one(service: dict[str, list[str]], key: str) -> str:
    values = service[key]
    assert len(values) == 1, f"{key} given {len(values)} times"
    return values[0]


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return found


def test_unit_has_what_the_agent_relies_on() -> None:
    service = parse_unit(UNIT)["Service"]
    assert one(service, "Type") == "notify" and one(service, "NotifyAccess") == "main"
    assert one(service, "WatchdogSec") == "30"
    assert one(service, "Restart") == "on-failure" and one(service, "RestartSec") == "5"
    assert one(service, "TimeoutStopSec") == "10"
    own_user = service.get("DynamicUser") == ["yes"] or service.get("User", ["root"])[-1] != "root"
    assert own_user, "the agent must not run as root"
    assert one(service, "StateDirectory") == "edge-agent"
    assert one(service, "ConfigurationDirectory") == "edge-agent"
    assert one(service, "ExecStart").split() == [
        "/opt/edge-agent/bin/edge-agent",
        "run",
        "--config",
        "/etc/edge-agent/agent.yaml",
    ]
    assert one(service, "ExecReload").endswith("kill -HUP $MAINPID")
    families = set(one(service, "RestrictAddressFamilies").split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "edge-agent" in scripts, "ExecStart runs the edge-agent console script"


def test_unit_environment_points_the_agent_at_its_state_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = parse_unit(UNIT)["Service"]
    env = dict(item.split("=", 1) for item in service["Environment"])
    state_dir = env["EDGE_AGENT_STATE_DIR"]
    assert state_dir == "/var/lib/" + one(service, "StateDirectory")
    # The variable really is the one the agent reads, with the shipped config file.
    monkeypatch.setenv("EDGE_AGENT_STATE_DIR", state_dir)
    settings = load_settings(REPO / "config" / "agent.yaml")
    assert settings.outbox_path == Path(state_dir) / "outbox.sqlite"


def test_sandbox_exposure_is_at_most_2() -> None:
    analyze = systemd_analyze()
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    if "offline" in output and "unrecognized option" in output:
        pytest.skip("this systemd-analyze is older than 250 (no --offline)")
    match = re.search(r"Overall exposure level for edge-agent\.service: (\d+(?:\.\d+)?)", output)
    assert match, output
    exposure = float(match.group(1))
    assert exposure <= 2.0, output


def test_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify against a scratch root holding the agent's executable."""
    analyze = systemd_analyze()
    if not (SYSTEMD_UNITS / "sysinit.target").exists():
        pytest.skip(f"{SYSTEMD_UNITS} lacks systemd's own units, needed to resolve dependencies")
    root = tmp_path / "root"
    shutil.copytree(SYSTEMD_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    for tool in ("/opt/edge-agent/bin/edge-agent", "/bin/kill"):
        fake = root / tool.lstrip("/")
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
    done = subprocess.run(
        [analyze, "verify", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # Unknown keys and unparsable values are only warnings: fail on them too.
    assert [line for line in output.splitlines() if UNIT.name in line] == []
