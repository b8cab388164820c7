"""`edge-console run` as a subprocess, an HTTP client with a cookie jar, and a stand-in for
the agent's alarm lifecycle where the agent in this checkout does not implement it yet.

The stand-in speaks exactly the alarm-lifecycle contract (retained alarm list, replies,
audit events) on the real topics; tests use the real agent's implementation as soon as the
agent has it (``lifecycle_in_agent()``).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from mosquitto import HOST, free_port

from edge_console.web.auth import hash_password

PASSWORD = "correct horse battery"


def lifecycle_in_agent() -> bool:
    from edge_agent.config import TopicSettings

    return "alarm_command" in TopicSettings.model_fields


def console_config(workdir: Path, broker_port: int, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "console_id": "test",
        "plants": ["p1"],
        "state_dir": str(workdir / "state"),
        "mqtt": {
            "host": HOST,
            "port": broker_port,
            "keepalive": 5,
            "reconnect_min_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
        },
        "web": {"port": free_port(), "session_secret": "test-secret-0123456789"},
        "users": [{"name": "alice", "password_hash": hash_password(PASSWORD)}],
        "logging": {"level": "INFO", "format": "json"},
    }
    config.update(extra)
    return config


@dataclass
class ConsoleProcess:
    workdir: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config['web'].get('host', HOST)}:{self.config['web']['port']}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "console.log"

    def start(self, timeout: float = 30.0) -> ConsoleProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "console.yaml"
        cfg.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_console", "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"console exited:\n{self.log_text()[-3000:]}")
            try:
                if self.health()["broker_connected"]:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"console not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/api/health", timeout=5) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class Browserless:
    """An HTTP client with cookies, for the sign-in and CSRF tests."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, data=data, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with self.opener.open(req, timeout=15) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def login_token(self) -> str:
        _, _, body = self.request("GET", "/login")
        m = re.search(rb'name="csrf" value="([^"]+)"', body)
        assert m, body[:500]
        return m.group(1).decode()


@dataclass
class LifecycleStandIn:
    """The agent side of the alarm-lifecycle contract, for agents that lack it."""

    port: int
    plant: str = "p1"
    alarms: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> LifecycleStandIn:
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="lifecycle-stand-in")
        self.client.on_message = self._on_message
        self.client.connect(HOST, self.port)
        self.client.subscribe(f"plant/{self.plant}/+/alerts", qos=1)
        self.client.subscribe(f"plant/{self.plant}/+/alarms/command", qos=1)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _publish_list(self, unit: str) -> None:
        doc = {
            "plant": self.plant,
            "unit": unit,
            "agent_id": "stand-in",
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "out_of_service": {"unit": False, "sensors": []},
            "alarms": list(self.alarms.get(unit, {}).values()),
        }
        self.client.publish(f"plant/{self.plant}/{unit}/alarms", json.dumps(doc), 1, retain=True)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        unit = msg.topic.split("/")[2]
        doc = json.loads(msg.payload)
        with self._lock:
            if msg.topic.endswith("/alerts"):
                self._on_alert(unit, doc)
            else:
                self._on_command(unit, doc)

    def _on_alert(self, unit: str, a: dict[str, Any]) -> None:
        if a.get("state") not in ("raised", "cleared") or a.get("kind") == "flood":
            return
        subject = (a.get("limit") or {}).get("sensor")
        name = a["kind"] if subject is None else f"{a['kind']}/{subject}"
        alarms = self.alarms.setdefault(unit, {})
        entry = alarms.get(name)
        if a["state"] == "raised":
            alarms[name] = {
                "alarm": name, "kind": a["kind"], "subject": subject, "state": "unack_active",
                "active": True, "acknowledged": False, "alert_id": a["alert_id"],
                "severity": a["severity"], "raised_at": a["raised_at"],
                "message": f"{name} raised", "shelved": None, "suppressed": False,
                "out_of_service": False,
            }  # fmt: skip
        elif entry is not None:
            if entry["acknowledged"]:
                del alarms[name]
            else:
                entry.update(state="unack_rtn", active=False)
        self._publish_list(unit)

    def _on_command(self, unit: str, cmd: dict[str, Any]) -> None:
        self.commands.append(cmd)
        entry = self.alarms.get(unit, {}).get(str(cmd.get("alarm")))
        ok = cmd.get("command") == "acknowledge" and entry is not None and bool(cmd.get("operator"))
        reply: dict[str, Any] = {
            "request_id": cmd.get("request_id"), "command": cmd.get("command"),
            "alarm": cmd.get("alarm"), "ok": ok,
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }  # fmt: skip
        if not ok:
            reply["reason"] = "the stand-in only acknowledges existing alarms"
        self.client.publish(f"plant/{self.plant}/{unit}/alarms/reply", json.dumps(reply), 1)
        if not ok or entry is None:
            return
        entry.update(acknowledged=True, state="ack_active" if entry["active"] else "normal")
        if not entry["active"]:
            del self.alarms[unit][entry["alarm"]]
        audit = {
            "alert_id": entry["alert_id"], "plant": self.plant, "unit": unit,
            "kind": entry["kind"], "state": "acknowledged", "severity": entry["severity"],
            "ts": reply["ts"], "raised_at": entry["raised_at"], "score": None, "models": {},
            "top_sensors": [], "limit": None, "stale_sensors": [], "flood": None,
            "model_set_version": "", "agent_id": "stand-in", "resent": False,
            "received_at": None, "operator": cmd["operator"], "comment": cmd.get("comment"),
        }  # fmt: skip
        self.client.publish(f"plant/{self.plant}/{unit}/alerts", json.dumps(audit), 1)
        self._publish_list(unit)
