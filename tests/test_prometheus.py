"""The monitoring that ships in config/prometheus and config/grafana works.

* the alerting rules pass ``promtool check rules`` and their unit tests (``promtool test
  rules``, with a firing and a quiet case per alert);
* every metric the rules and the Grafana dashboard query is one the agent exports;
* a real Prometheus (Debian's ``prometheus``), configured from the shipped scrape config
  and rules, scrapes a running agent and serves the key series through its HTTP API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from handmade_models import build_model_set, normal_series

from edge_agent.metrics import Metrics
from harness.agent import AgentProcess, agent_config
from harness.mqtt_client import MqttClient
from harness.net import HOST, free_port
from harness.telemetry import PLANT, telemetry_payload

REPO = Path(__file__).resolve().parents[1]
PROM_DIR = REPO / "config" / "prometheus"
DASHBOARD = REPO / "config" / "grafana" / "edge-agent-dashboard.json"
RULES = PROM_DIR / "edge-agent-rules.yml"
ALERTS = {
    "EdgeAgentDown",
    "EdgeAgentBrokerDisconnected",
    "EdgeAgentOutboxGrowing",
    "EdgeAgentOutboxDropping",
    "EdgeAgentOutboxDegraded",
    "EdgeAgentRejectionsRising",
    "EdgeAgentEventLoopLag",
    "EdgeAgentModelSetReloadFailed",
    "EdgeAgentNoStepsScored",
}


def binary(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None
    )
    if found is None:
        pytest.fail(
            f"{name} is not installed: run `apt-get install prometheus` (`make test` installs it)"
        )
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=60
    )


def exported_metric_names() -> set[str]:
    """Every sample name the agent can export (labelled families included)."""
    names = {"up"}
    for family in Metrics().registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "info": ("_info",),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


def queried_metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:edge_agent_[a-z0-9_]+|up)\b(?=\s*[{\[)\s=<>!]|$)", expr))


# -- promtool --------------------------------------------------------------------------------


def test_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_scrape_config_passes_promtool_check() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass_and_cover_every_alert() -> None:
    done = promtool("test", "rules", "edge-agent-rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    tests = yaml.safe_load((PROM_DIR / "edge-agent-rules.test.yml").read_text(encoding="utf-8"))
    cases = [c for t in tests["tests"] for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == ALERTS and quiet == ALERTS


def test_rule_unit_tests_fail_when_a_rule_is_wrong(tmp_path: Path) -> None:
    """The cases are not vacuous: loosening one threshold breaks them."""
    for name in ("edge-agent-rules.yml", "edge-agent-rules.test.yml"):
        shutil.copy(PROM_DIR / name, tmp_path / name)
    rules = tmp_path / "edge-agent-rules.yml"
    rules.write_text(rules.read_text(encoding="utf-8").replace("> 0.05 *", "> 0.5 *"), "utf-8")
    done = subprocess.run(
        [binary("promtool"), "test", "rules", "edge-agent-rules.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "EdgeAgentRejectionsRising" in done.stdout + done.stderr


# -- metric names ----------------------------------------------------------------------------


def test_every_metric_the_rules_query_exists() -> None:
    exported = exported_metric_names()
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} == ALERTS
    for expr in exprs:
        used = queried_metric_names(expr)
        assert used, expr
        assert used <= exported, f"{expr}: unknown {used - exported}"


def test_dashboard_is_valid_json_and_queries_only_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] and dash["title"] and dash["panels"]
    exported = exported_metric_names()
    used: set[str] = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = queried_metric_names(target["expr"])
            assert names, target["expr"]
            assert names <= exported, f"{panel['title']}: unknown {names - exported}"
            used |= names
    # the dashboard covers the agent's metrics (every family at least once)
    families = {f.name for f in Metrics().registry.collect()}
    covered = {f for f in families if any(u.startswith(f) for u in used)}
    assert covered == families, f"not on the dashboard: {sorted(families - covered)}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_the_names_check_catches_a_typo() -> None:
    assert queried_metric_names("rate(edge_agent_steps_scored_totl[5m])") - exported_metric_names()


# -- a real Prometheus scraping a real agent -------------------------------------------------


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class Prometheus:
    def __init__(self, workdir: Path, agent_target: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text(encoding="utf-8"))
        cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = "1s"
        [job] = cfg["scrape_configs"]
        job["scrape_interval"] = "1s"
        job["static_configs"][0]["targets"] = [agent_target]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
        shutil.copy(RULES, workdir / RULES.name)
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={HOST}:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        body = http_json(f"{self.url}/api/v1/query?{q}")
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = self.query(expr)
            except OSError:
                result = []
            if result:
                return result
            time.sleep(0.5)
        log = (self.workdir / "prometheus.log").read_text(errors="replace")[-2000:]
        raise AssertionError(f"no result for {expr!r} within {timeout}s; log tail:\n{log}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def scraped_agent(tmp_path: Path, mosquitto: Any) -> Iterator[tuple[Prometheus, AgentProcess]]:
    models = build_model_set(tmp_path / "models", window=30)
    cfg = agent_config(tmp_path, mosquitto.port, models)
    with AgentProcess(tmp_path / "agent", cfg).start() as agent:
        client = MqttClient(mosquitto.port, "plant")
        rows = normal_series(50, seed=7)
        t0 = float(int(time.time()) - 60)
        for i, row in enumerate(rows):
            client.publish(f"plant/{PLANT}/unit1/telemetry", telemetry_payload(t0 + i, row))
        client.publish(f"plant/{PLANT}/unit1/telemetry", b"{not json")
        client.close()
        agent.wait_for_metric("steps_scored", 21, timeout=15)
        prom = Prometheus(
            tmp_path / "prometheus", f"{cfg['metrics']['host']}:{cfg['metrics']['port']}"
        )
        try:
            yield prom, agent
        finally:
            prom.stop()


@pytest.mark.slow
def test_prometheus_scrapes_the_agent_and_loads_the_rules(
    scraped_agent: tuple[Prometheus, AgentProcess],
) -> None:
    prom, agent = scraped_agent
    key_series = {
        'up{job="edge-agent"}': 1.0,
        "edge_agent_broker_connected": 1.0,
        "edge_agent_units_tracked": 1.0,
        "edge_agent_messages_received_total": 51.0,
        'edge_agent_messages_rejected_total{reason="bad_json"}': 1.0,
        "edge_agent_outbox_depth": 0.0,
    }
    shown = {}
    for expr in key_series:
        [sample] = prom.wait(expr)
        assert sample["metric"]["job"] == "edge-agent" and sample["metric"]["plant"] == "plant1"
        shown[expr] = float(sample["value"][1])
    print("key series via the Prometheus HTTP API:", json.dumps(shown, indent=1))
    assert shown == key_series
    # steps keep closing (carried forward) for a while after the burst: between the count
    # at start and what the agent says now
    [scored] = prom.wait("edge_agent_steps_scored_total")
    assert 21 <= float(scored["value"][1]) <= agent.metric("steps_scored")
    [info] = prom.wait("edge_agent_model_set_info")
    assert info["metric"]["version"]
    lag = prom.wait("edge_agent_event_loop_lag_seconds_count")
    assert float(lag[0]["value"][1]) > 0
    rules = http_json(f"{prom.url}/api/v1/rules")["data"]["groups"]
    loaded = {r["name"]: r for g in rules for r in g["rules"]}
    assert set(loaded) == ALERTS
    assert {r["health"] for r in loaded.values()} <= {"ok", "unknown"}
    # the healthy agent trips none of them
    firing = prom.query('ALERTS{alertstate="firing"}')
    assert firing == []
