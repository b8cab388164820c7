"""The agent's retained status and ``model_set_info`` trace the running model set to its
training run and registry version, and carry the configured plant metadata (real agent
process, real Mosquitto; handmade model sets with and without a ``tracking`` entry)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from handmade_models import build_model_set

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import status_payload
from edge_agent.pipeline.manifest import MANIFEST_NAME, load_manifest
from edge_agent.tools.plants import find_plant
from harness.agent import AgentProcess, agent_config
from harness.broker import MosquittoBroker
from harness.mqtt_client import MqttClient
from harness.telemetry import PLANT

pytestmark = pytest.mark.slow
RUN_ID = "0123456789abcdef0123456789abcdef"


def tracked(directory: Path, version: int) -> Path:
    path = directory / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["tracking"] = {"run_id": RUN_ID, "experiment": "edge-agent",
                       "registered_model": "thermal-8", "registered_version": version}  # fmt: skip
    path.write_text(json.dumps(raw))
    assert load_manifest(directory).tracking is not None
    return directory


def retained_status(port: int, agent_id: str) -> dict[str, Any]:
    client = MqttClient(port).subscribe(f"plant/{PLANT}/edge/{agent_id}/status")
    try:
        got = client.collect(until=lambda g: bool(g), timeout=5)
    finally:
        client.close()
    assert got and got[0].retain
    doc: dict[str, Any] = got[0].json()
    return doc


def info_metric(agent: AgentProcess) -> dict[str, str]:
    infos = [dict(labels) for (name, labels), v in agent.metrics().items()
             if name == "edge_agent_model_set_info" and v == 1.0]  # fmt: skip
    assert len(infos) == 1
    return infos[0]


def test_status_payload_without_tracking_or_plant_info() -> None:
    body = json.loads(status_payload("online", AgentSettings(units=[{"name": "u"}]), "v1"))
    assert body["model_set"] == {"version": "v1"} and "plant_info" not in body


def test_status_and_metric_carry_run_id_version_and_plant(tmp_path: Path) -> None:
    v1 = tracked(build_model_set(tmp_path / "v1", window=20, version="hm-v1"), 4)
    v2 = build_model_set(tmp_path / "v2", window=20, version="hm-v2")  # untracked
    warning = "the fit part is 0.1 h of data (under 24 h): ..."
    raw = json.loads((v2 / MANIFEST_NAME).read_text())
    raw.setdefault("metrics", {})["warnings"] = [warning]  # as training writes for a short fit
    (v2 / MANIFEST_NAME).write_text(json.dumps(raw))
    plant = find_plant("VINDH_CHAL STPS")
    info = {"name": plant.name, "gppd_id": plant.gppd_id, "fuel": plant.fuel,
            "capacity_mw": plant.capacity_mw, "latitude": plant.latitude,
            "longitude": plant.longitude}  # fmt: skip
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        config = agent_config(tmp_path / "agent", broker.port, v1, agent_id="agent-trace",
                              plant_info=info)  # fmt: skip
        agent = AgentProcess(tmp_path / "agent", config).start()
        try:
            status = retained_status(broker.port, "agent-trace")
            assert status["model_set"] == {
                "version": "hm-v1", "run_id": RUN_ID,
                "registered_model": "thermal-8", "registered_version": 4,
                "training_warnings": [],
            }  # fmt: skip
            assert status["plant_info"] == info
            metric = info_metric(agent)
            assert (metric["run_id"], metric["registered_version"]) == (RUN_ID, "4")
            assert metric["registered_model"] == "thermal-8"

            agent.config["models"]["dir"] = str(v2)
            agent.write_config()
            agent.signal(signal.SIGHUP)
            agent.wait_for_event("reloaded", model_set="hm-v2")
            status = retained_status(broker.port, "agent-trace")
            assert status["model_set"]["version"] == "hm-v2"
            assert status["model_set"]["run_id"] is None  # the untracked set says so
            assert status["model_set"]["training_warnings"] == [warning]
            assert info_metric(agent)["run_id"] == ""
        finally:
            rc, _ = agent.terminate()
    assert rc == 0


def test_agent_modules_never_import_training_or_mlflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys, edge_agent.daemon.server, edge_agent.cli, edge_agent.tools.demo, "
        "edge_agent.tools.plants, "
        "edge_agent.tools.publisher, edge_agent.tools.replay\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'mlflow', 'training', 'tensorflow', 'keras', 'sklearn', 'skl2onnx', 'tf2onnx', "
        "'sqlalchemy', 'alembic'})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_check_names_the_training_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    models = tracked(build_model_set(tmp_path / "v1", window=20, version="hm-v1"), 4)
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(agent_config(tmp_path, 1883, models)))
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "check", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert f"trained in run {RUN_ID} (thermal-8 version 4)" in out.stdout
