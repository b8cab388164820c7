"""The README's commands work as written.

Every ```bash block of README.md is either run here, verbatim, in a temporary copy of the
checkout (with the venv reachable only the way the README says: by activating it), or
listed in NOT_RUN with the reason — a new block fails this test until it is one or the other.
The training walk-through takes about a minute (quick options, as the README shows them).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: First command line of a block (prefix) -> why it is not run by this test.
NOT_RUN = {
    "make demo": "`make demo` and `make test` are what runs this test",
    "python3 -m venv /opt/edge-agent": "installs into /opt and /etc and enables a systemd unit",
    "edge-train train --config config/training.yaml --data export.csv": "needs your own "
    "historian export (export.csv); the same options are tested in test_training_cli.py",
    "make test ": "runs the whole suite, this test included",
    "pip install -e '.[console]'": "`make demo` and `make test` install the console extra",
    "edge-console run --config": "serves until Ctrl-C; tests/test_console_web.py runs it",
    'export STORE="sqlite:///$PWD/runs/registry.db"': "trains twice "
    "(a few minutes); tests/test_training_tracking.py runs train, list, promote and rollback",
    "pip install -e '.[tracking-ui]'": "installs full MLflow (the UI) and serves until Ctrl-C",
    "edge-train generate --plant 'VINDH_CHAL STPS'": "simulate needs a broker on 1883; "
    "tests/test_plants.py runs generate --plant and --fuel",
    "mosquitto -p 1884 &": "interactive: waits on the demo's first alert; "
    "tests/test_alarm_lifecycle_integration.py sends each of these commands to a real agent",
}
#: First command line of a block (prefix) -> the README section it belongs to; run here.
RUN = {
    ". .venv/bin/activate   # or call": "The two commands",
    ". .venv/bin/activate\n": "Training on your own data",
    "promtool check rules": "Monitoring",
    ". .venv/bin/activate  # then: a password hash": "Control-room console",
}


def bash_blocks() -> list[tuple[str, str]]:
    """(section heading, block text) of every ```bash block, in order."""
    blocks = []
    heading = ""
    text = README.read_text(encoding="utf-8")
    for m in re.finditer(r"^(#+ [^\n]*)$|^```bash\n(.*?)^```$", text, re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("# ").strip()
        else:
            blocks.append((heading, m.group(2)))
    return blocks


def block(prefix: str) -> str:
    [found] = [b for _, b in bash_blocks() if b.startswith(prefix)]
    return found


def test_every_bash_block_is_run_or_has_a_reason() -> None:
    blocks = bash_blocks()
    assert len(blocks) >= 6
    for heading, body in blocks:
        ran = [p for p in RUN if body.startswith(p)]
        skipped = [p for p in NOT_RUN if body.startswith(p)]
        assert len(ran) + len(skipped) == 1, f"README block under {heading!r} unclassified:\n{body}"
        if ran:
            assert RUN[ran[0]] == heading


def test_the_metric_list_names_every_metric() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Operations") : text.index("### Monitoring")]
    listed = set(re.findall(r"`([a-z0-9_]+)(?:\{[a-z]+\})?`", section))
    for family in Metrics().registry.collect():
        name = family.name.removeprefix("edge_agent_")
        shown = {"counter": name + "_total", "info": name + "_info"}.get(family.type, name)
        assert shown in listed, f"README's metric list lacks {shown}"


def test_the_config_comments_point_to_existing_readme_sections() -> None:
    headings = set(re.findall(r"^#+ (.*)$", README.read_text(encoding="utf-8"), re.M))
    config = (REPO / "config" / "agent.yaml").read_text(encoding="utf-8")
    for name in re.findall(r'README "([^"]+)"', config):
        assert name in headings, f"config/agent.yaml points to a README section {name!r}"


def checkout_copy(dst: Path) -> Path:
    """Tracked and untracked-but-not-ignored files, as a fresh clone (plus work in progress)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / name.decode()
        if src.is_file():
            target = dst / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    # `make test` made .venv in the checkout; the copy uses the same one.
    (dst / ".venv").symlink_to(Path(sys.prefix))
    return dst


def shell_env(copy: Path) -> dict[str, str]:
    """The user's shell: the venv not on PATH until the README's activation puts it there."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_AGENT_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(path)
    env["PYTHONPATH"] = str(copy)  # the copy's code, not the checkout the venv points to
    return env


def digest(directory: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(directory.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(directory)).encode() + f.read_bytes())
    return h.hexdigest()


def run_block(body: str, copy: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", body],
        cwd=copy,
        env=shell_env(copy),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_the_training_walk_through_runs_verbatim(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path / "edge-agent")
    shipped = digest(copy / "models")
    assert run_block("command -v edge-train || true", copy, 10).stdout == ""  # not on PATH yet
    walk = block(". .venv/bin/activate\n")
    done = run_block(walk, copy, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    models = copy / "runs" / "models"
    for name in ("iforest.onnx", "lstm_ae.onnx", "manifest.json", "report/report.md"):
        assert (models / name).is_file(), name
    assert "ensemble" in done.stdout  # evaluate printed its table
    assert done.stdout.rstrip().splitlines()[-1].startswith("ok: config/agent.yaml: model set ")
    assert digest(copy / "models") == shipped  # the shipped set is untouched
    # and running it again does not overwrite the new set either
    again = run_block(walk, copy, timeout=240)
    assert again.returncode != 0 and "pass --force to replace it" in again.stderr


def test_the_activation_and_monitoring_blocks_run_verbatim(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path / "edge-agent")
    activate = block(". .venv/bin/activate   # or call")
    done = run_block(activate + "edge-agent --version\n", copy, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("edge-agent "), done.stderr
    done = run_block(block("promtool check rules"), copy, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_the_console_setup_block_runs_verbatim(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path / "edge-agent")
    done = run_block(block(". .venv/bin/activate  # then: a password hash"), copy, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("$argon2id$"), done.stdout
    assert lines[-1].startswith("config OK: plants plant1"), done.stdout
    assert (copy / "console.yaml").is_file()


def test_readme_lists_every_rejection_reason() -> None:
    """The README's list of ``messages_rejected`` reasons is the enum, no more, no less."""
    import re

    from edge_agent.pipeline.rejections import RejectReason

    text = README.read_text(encoding="utf-8")
    start = text.index("Rejected messages are counted by reason")
    paragraph = text[start : text.index("Nothing is dropped silently", start)]
    listed = set(re.findall(r"`([a-z_]+)`", paragraph))
    assert listed == {r.value for r in RejectReason}
