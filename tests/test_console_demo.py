"""`edge-agent demo` starts the console against its embedded broker; the demo's alarms reach it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("nicegui")

from handmade_models import build_model_set

from harness import REPO
from harness.net import free_port, port_open

pytestmark = pytest.mark.slow


def test_demo_opens_the_console_and_its_alarms_arrive(tmp_path: Path) -> None:
    models = build_model_set(tmp_path / "models", window=30, version="hm-demo")
    web_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "demo", "--duration", "40", "--units", "2",
         "--models", str(models), "--metrics-port", str(free_port()),
         "--console-port", str(web_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    lines: list[str] = []
    health: dict[str, object] = {}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line.rstrip("\n"))
            m = re.match(
                r"console on (http://127\.0\.0\.1:(\d+)/) \(sign in as operator / \S+\)", line
            )
            if m:
                url = m.group(1)
                assert int(m.group(2)) == web_port
        assert url is not None, lines
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "api/health", timeout=5) as r:
                    health = json.loads(r.read())
                if health["events_written"] and health["agents"]:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert health.get("events_written"), (health, lines)  # the demo alerts are archived
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.status == 200
        out, err = proc.communicate(timeout=60)
        lines += out.splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert lines[-1] == "demo stopped"
    assert "Traceback" not in err
    assert not port_open(web_port)  # the console went with the demo
