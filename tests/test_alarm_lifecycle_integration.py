"""The alarm lifecycle end to end: real Mosquitto, the agent as a subprocess, a console client.

The console sends commands on ``plant/p1/unit1/alarms/command``, reads replies, the audit
trail on the alerts topic and the retained alarm list. Readings are complete telemetry
messages with past timestamps, so each closes its step at once; ``on_delay``/``off_delay`` 1
make one breaching step raise a limit alarm and one normal step clear it.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as paho
import pytest
from handmade_models import build_model_set, normal_series

from harness.agent import AgentProcess, agent_config
from harness.broker import MosquittoBroker
from harness.net import HOST
from harness.telemetry import PLANT, SENSORS

pytestmark = pytest.mark.slow

UNIT = "unit1"
BASE = f"plant/{PLANT}/{UNIT}"
COMMAND, REPLY, ALARMS, ALERTS = (
    f"{BASE}/alarms/command",
    f"{BASE}/alarms/reply",
    f"{BASE}/alarms",
    f"{BASE}/alerts",
)
WINDOW = 12
LIMITS = {"steam_pressure": {"hi": 165.0}, "bearing_temperature": {"hi": 75.0}}
BREACH = {"steam_pressure": 170.0, "bearing_temperature": 80.0}
COL = {name: i for i, name in enumerate(SENSORS)}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Window 60: these short scenarios never fill it, so only limit alarms raise."""
    return build_model_set(tmp_path_factory.mktemp("models"), window=60)


@pytest.fixture(scope="module")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Window 12: anomaly alarms after a dozen steps."""
    return build_model_set(tmp_path_factory.mktemp("small-models"), window=WINDOW)


def lifecycle_config(workdir: Path, port: int, models: Path, **kw: Any) -> dict[str, Any]:
    config = agent_config(
        workdir,
        port,
        models,
        alarm={
            "on_delay": 1,
            "off_delay": 1,
            "shelve_default_seconds": 60,
            "shelve_max_seconds": 600,
        },
        topics={"publish_scores": False},
        **kw,
    )
    config["units"] = [{"name": UNIT, "limits": LIMITS}]
    return config


class Console:
    """An operator console: sends commands, keeps every message it sees, per topic."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None):
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"console-{uuid.uuid4().hex[:6]}",
            protocol=paho.MQTTv5,
        )  # fmt: skip
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.connect(HOST, port, keepalive=10)
        self.client.loop_start()
        for topic in (ALARMS, f"plant/{PLANT}/+/alarms/reply", ALERTS):
            self.client.subscribe(topic, qos=1)
        time.sleep(0.3)
        self._t = float(int(time.time()) - 240)
        self._rows = np.asarray(normal_series(400, seed=3))
        self._k = 0

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        doc = orjson.loads(msg.payload) if msg.payload else {}
        with self._lock:
            self.messages.append((msg.topic, doc, bool(msg.retain)))

    def on(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d for t, d, _ in self.messages if t == topic]

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last list: {self.alarm_list()}")

    # -- what the agent says ---------------------------------------------------------------
    def alarm_list(self) -> dict[str, Any] | None:
        lists = self.on(ALARMS)
        return lists[-1] if lists else None

    def wait_list(self, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        return self.wait(  # type: ignore[no-any-return]
            what, lambda: (lambda d: d if d is not None and check(d) else None)(self.alarm_list())
        )

    def alerts(self, state: str | None = None, alarm: str | None = None) -> list[dict[str, Any]]:
        return [
            a for a in self.on(ALERTS)
            if (state is None or a["state"] == state) and (alarm is None or a["alarm"] == alarm)
        ]  # fmt: skip

    def wait_alert(self, state: str, alarm: str | None, n: int = 1) -> dict[str, Any]:
        found = self.wait(
            f"{n} {state} alert(s) of {alarm}",
            lambda: len(self.alerts(state, alarm)) >= n and self.alerts(state, alarm),
        )
        return found[n - 1]  # type: ignore[no-any-return]

    # -- what the console does -------------------------------------------------------------
    def send(
        self,
        topic: str = COMMAND,
        raw: bytes | None = None,
        timeout: float = 10.0,
        retain: bool = False,
        **fields: Any,
    ) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        payload = raw if raw is not None else orjson.dumps({"request_id": request_id, **fields})
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
        reply_topic = topic.removesuffix("/command") + "/reply"
        if raw is not None:
            n = len(self.on(reply_topic))
            return self.wait(
                "a reply", lambda: len(self.on(reply_topic)) > n and self.on(reply_topic)[-1]
            )  # type: ignore[no-any-return]
        return self.wait(  # type: ignore[no-any-return]
            "a reply",
            lambda: next((r for r in self.on(reply_topic) if r["request_id"] == request_id), None),
            timeout,
        )

    def steps(self, n: int = 1, **values: float) -> None:
        """``n`` complete telemetry steps, with ``values`` overriding the normal readings."""
        for _ in range(n):
            row = self._rows[self._k % len(self._rows)].copy()
            for name, v in values.items():
                row[COL[name]] = v
            body = {"ts": self._t, "values": dict(zip(SENSORS, map(float, row), strict=True))}
            self.client.publish(f"{BASE}/telemetry", orjson.dumps(body), qos=1).wait_for_publish(5)
            self._t += 1.0
            self._k += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def entry(doc: dict[str, Any] | None, alarm: str) -> dict[str, Any] | None:
    if doc is None:
        return None
    return next((a for a in doc["alarms"] if a["alarm"] == alarm), None)


def has(alarm: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    def check(doc: dict[str, Any]) -> bool:
        e = entry(doc, alarm)
        return e is not None and all(e[k] == v for k, v in fields.items())

    return check


def gone(alarm: str) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: entry(doc, alarm) is None


SP = "limit/steam_pressure"
BT = "limit/bearing_temperature"


def test_every_transition_over_mqtt_with_audit_trail_and_retained_list(
    tmp_path: Path, mosquitto: MosquittoBroker, models: Path
) -> None:
    config = lifecycle_config(tmp_path, mosquitto.port, models)
    with AgentProcess(tmp_path / "agent", config) as agent:
        agent.start()
        console = Console(mosquitto.port)
        try:
            # A retained list exists from the start, empty.
            first = console.wait_list(lambda d: True, "the first list")
            assert first["alarms"] == [] and first["out_of_service"] == {
                "unit": False,
                "sensors": [],
            }

            # raise -> unack_active -> acknowledge -> ack_active -> clear -> normal
            console.steps(2)
            console.steps(1, steam_pressure=BREACH["steam_pressure"])
            raised = console.wait_alert("raised", SP)
            e = entry(console.wait_list(has(SP, state="unack_active"), "unack_active"), SP)
            assert e is not None and e["alert_id"] == raised["alert_id"] and e["kind"] == "limit"
            assert e["subject"] == "steam_pressure" and "170" in e["message"]
            reply = console.send(command="acknowledge", alarm=SP, operator="alice", comment="seen")
            assert reply["ok"] is True and reply["alarm"] == SP and "reason" not in reply
            audit = console.wait_alert("acknowledged", SP)
            assert (audit["alert_id"], audit["operator"], audit["comment"]) == (
                raised["alert_id"], "alice", "seen",
            )  # fmt: skip
            console.wait_list(has(SP, state="ack_active", acknowledged=True), "ack_active")
            console.steps(1)
            console.wait_alert("cleared", SP)
            console.wait_list(gone(SP), "normal: off the list")

            # raise -> clear -> unack_rtn -> acknowledge -> normal
            console.steps(1, steam_pressure=BREACH["steam_pressure"])
            console.steps(1)
            console.wait_list(has(SP, state="unack_rtn", active=False), "unack_rtn")
            assert console.send(command="acknowledge", alarm=SP, operator="bob")["ok"]
            console.wait_list(gone(SP), "acknowledged after RTN: normal")

            # timed shelve: the raise is held, and released when the shelve expires
            reply = console.send(command="shelve", alarm=BT, operator="carol", duration_seconds=3)
            assert reply["ok"], reply
            console.wait_list(has(BT, state="normal", active=False), "shelved while normal")
            console.steps(1, bearing_temperature=BREACH["bearing_temperature"])
            shelved = console.wait_list(has(BT, active=True), "active while shelved")
            e = entry(shelved, BT)
            assert e is not None and e["shelved"]["by"] == "carol" and e["shelved"]["until"]
            time.sleep(0.3)
            assert console.alerts("raised", BT) == [], "a shelved alarm is not annunciated"
            expired = console.wait_alert("shelve_expired", BT)
            assert expired["operator"] == "carol"
            released = console.wait_alert("raised", BT)
            assert released["alert_id"] == e["alert_id"]
            console.wait_list(has(BT, shelved=None, state="unack_active"), "unshelved by expiry")
            console.send(command="acknowledge", alarm=BT, operator="carol")
            # An expired shelve cannot be lifted.
            late = console.send(command="unshelve", alarm=BT, operator="carol")
            assert late["ok"] is False and "not shelved" in late["reason"]

            # one-shot shelve of an active alarm: ends when the alarm clears
            reply = console.send(command="shelve", alarm=BT, operator="dan", one_shot=True)
            assert reply["ok"], reply
            console.wait_list(
                has(BT, shelved={"by": "dan", "until": None, "one_shot": True, "comment": None}),
                "one-shot",
            )
            console.steps(1)
            console.wait_alert("cleared", BT)
            console.wait_alert("shelve_expired", BT, n=2)
            console.wait_list(gone(BT), "cleared after ack, shelve over: normal")

            # unshelve before expiry
            assert console.send(command="shelve", alarm=SP, operator="eve", duration_seconds=300)[
                "ok"
            ]
            console.wait_list(has(SP, state="normal"), "shelved")
            assert console.send(command="unshelve", alarm=SP, operator="eve")["ok"]
            console.wait_alert("unshelved", SP)
            console.wait_list(gone(SP), "unshelved")

            # out of service: per sensor, then back in service releases the held raise
            assert console.send(command="out_of_service", sensor="steam_pressure", operator="fay")[
                "ok"
            ]
            oos = console.wait_alert("out_of_service", None)
            assert (oos["kind"], oos["sensor"], oos["operator"]) == (
                "maintenance",
                "steam_pressure",
                "fay",
            )
            console.wait_list(
                lambda d: d["out_of_service"]["sensors"] == ["steam_pressure"], "OOS mark"
            )
            n_raised = len(console.alerts("raised", SP))
            console.steps(1, steam_pressure=BREACH["steam_pressure"])
            console.wait_list(has(SP, active=True, out_of_service=True), "active while OOS")
            time.sleep(0.3)
            assert len(console.alerts("raised", SP)) == n_raised, "out of service: not annunciated"
            assert console.send(command="in_service", sensor="steam_pressure", operator="fay")["ok"]
            console.wait_alert("in_service", None)
            console.wait_alert("raised", SP, n=n_raised + 1)
            console.wait_list(has(SP, out_of_service=False), "back in service")
            # the whole unit
            assert console.send(command="out_of_service", operator="fay")["ok"]
            console.wait_list(lambda d: d["out_of_service"]["unit"] is True, "unit OOS")
            assert console.send(command="in_service", operator="fay")["ok"]
            console.wait_list(lambda d: d["out_of_service"]["unit"] is False, "unit back")

            assert console.send(command="acknowledge", alarm=SP, operator="fay")["ok"]

            # bad commands: each answered with its reason, counted, never a crash
            ack = {"command": "acknowledge", "operator": "x"}
            unit9 = f"plant/{PLANT}/unit9/alarms/command"
            cases: list[tuple[str, dict[str, Any], str, str]] = [
                (COMMAND, {"raw": b"{nope"}, "not valid JSON", "bad_json"),
                (COMMAND, ack, "alarm: Field required", "schema"),
                (COMMAND, {**ack, "alarm": SP, "shift": 3}, "unknown field 'shift'", "schema"),
                (COMMAND, {**ack, "alarm": "limit/feedwater_flow"}, "unknown alarm",
                 "unknown_alarm"),
                (unit9, {**ack, "alarm": SP}, "not watched", "wrong_unit"),
                (COMMAND, {**ack, "alarm": SP, "unit": "unit2"}, "sent to unit", "wrong_unit"),
                (COMMAND, {**ack, "command": "shelve", "alarm": SP, "duration_seconds": 0},
                 "duration_seconds", "schema"),
                (COMMAND, {**ack, "command": "shelve", "alarm": SP, "duration_seconds": 601},
                 "exceeds the maximum", "bad_duration"),
                (COMMAND, {**ack, "alarm": SP}, "ack_active: nothing to acknowledge",
                 "not_applicable"),
            ]  # fmt: skip
            bad = [
                (console.send(topic, **fields), reason, code)
                for topic, fields, reason, code in cases
            ]
            for reply, reason, _ in bad:
                assert reply["ok"] is False and reason in reply["reason"], (reason, reply)
            for code in {c for _, _, c in bad}:
                want = sum(c == code for _, _, c in bad) + (code == "not_applicable")  # + late
                assert agent.metric("alarm_commands_refused", reason=code) == want, code
            assert agent.wait_for_event("alarm_command_refused")["level"] == "warning"
            assert agent.proc is not None and agent.proc.poll() is None

            # every audit event and raise/clear is a valid alert
            import json

            import jsonschema

            schemas = Path(__file__).parents[1] / "edge_agent/schemas"
            for file, topic in [
                ("alert.schema.json", ALERTS),
                ("alarm_list.schema.json", ALARMS),
                ("alarm_reply.schema.json", REPLY),
            ]:
                schema = json.loads((schemas / file).read_text(encoding="utf-8"))
                docs = console.on(topic)
                assert docs, topic
                for doc in docs:
                    jsonschema.validate(doc, schema)

            # A console that connects now sees the present state at once: the retained list.
            late = Console(mosquitto.port)
            try:
                got = late.wait("the retained list", lambda: late.messages)
                topic, doc, retained = got[0]
                assert (topic, retained) == (ALARMS, True)
                assert doc["alarms"] == console.alarm_list()["alarms"]  # type: ignore[index]
                assert entry(doc, SP)["state"] == "ack_active"  # type: ignore[index]
            finally:
                late.close()

            # KPIs per unit
            m = agent.metrics()
            u = (("unit", UNIT),)
            assert m[("edge_agent_alarm_rate_10min", u)] == 4  # 3 x steam pressure, 1 x bearing
            assert ("edge_agent_alarms_chattering", u) in m
            assert m[("edge_agent_alarms_standing", u)] == 0
            assert m[("edge_agent_alarms_shelved", u)] == 0
            assert m[("edge_agent_alarm_flood_periods", u)] == 0
            assert m[("edge_agent_alarms_out_of_service", (("scope", "unit"), ("unit", UNIT)))] == 0
            accepted = m[
                (
                    "edge_agent_alarm_commands_total",
                    (("command", "acknowledge"), ("result", "accepted")),
                )
            ]
            assert accepted == 4
        finally:
            console.close()


def test_suppression_by_design_while_load_is_low(
    tmp_path: Path, mosquitto: MosquittoBroker, small_models: Path
) -> None:
    config = lifecycle_config(
        tmp_path, mosquitto.port, small_models,
        suppression={"sensor": "load", "below": 100.0, "safety_sensors": ["bearing_temperature"]},
    )  # fmt: skip
    with AgentProcess(tmp_path / "agent", config) as agent:
        agent.start()
        console = Console(mosquitto.port)
        try:
            console.steps(WINDOW + 2)  # the window fills with normal data
            agent.wait_for_metric("steps_scored", 3)
            assert console.alerts("raised") == []
            # The unit trips: load near zero. The models call that an anomaly, and both
            # sensors cross their limits; only the safety sensor's limit alarm is annunciated.
            console.steps(3, load=20.0, **BREACH)
            console.wait_alert("raised", BT)
            doc = console.wait_list(
                lambda d: all(entry(d, a) for a in ("anomaly", SP, BT)), "three alarms listed"
            )
            assert doc["suppressed_by_design"] is True
            flags = [entry(doc, a)["suppressed"] for a in ("anomaly", SP, BT)]  # type: ignore[index]
            assert flags == [True, True, False]
            assert entry(doc, "anomaly")["state"] == "unack_active"  # type: ignore[index]
            time.sleep(0.5)
            assert {a["alarm"] for a in console.alerts("raised")} == {BT}, "suppressed: held"
            # Load back: the anomaly is still active (its window holds the trip), so its held
            # raise is annunciated now, and later cleared under the same alert_id.
            console.steps(1)
            anomaly = console.wait_alert("raised", "anomaly")
            console.wait_list(lambda d: d["suppressed_by_design"] is False, "suppression over")
            console.steps(WINDOW + 2)
            cleared = console.wait_alert("cleared", "anomaly")
            assert cleared["alert_id"] == anomaly["alert_id"]
            # The steam pressure alarm was released and cleared in the recovery step.
            assert [a["state"] for a in console.alerts(alarm=SP)] == ["raised", "cleared"]
        finally:
            console.close()


def test_state_survives_sigkill(tmp_path: Path, mosquitto: MosquittoBroker, models: Path) -> None:
    config = lifecycle_config(tmp_path, mosquitto.port, models)
    agent = AgentProcess(tmp_path / "agent", config)
    console = Console(mosquitto.port)
    try:
        agent.start()
        console.steps(1, steam_pressure=BREACH["steam_pressure"])
        console.wait_list(has(SP, state="unack_active"), "raised")
        assert console.send(command="acknowledge", alarm=SP, operator="alice")["ok"]
        assert console.send(command="shelve", alarm=BT, operator="bob", duration_seconds=300)["ok"]
        # Published retained (a mistake): runs once now, and must not run again at reconnects.
        oos = {"command": "out_of_service", "sensor": "load", "operator": "cy"}
        assert console.send(retain=True, **oos)["ok"]
        before = console.wait_list(
            lambda d: d["out_of_service"]["sensors"] == ["load"] and has(SP, state="ack_active")(d)
            and entry(d, BT) is not None,
            "the state to keep",
        )  # fmt: skip
        agent.kill()  # SIGKILL: no shutdown code runs
        assert agent.proc is not None and agent.proc.returncode == -signal.SIGKILL
        # Forget the retained list, so what comes next is what the new process knows.
        console.client.publish(ALARMS, b"", qos=1, retain=True).wait_for_publish(5)
        n = len(console.on(ALARMS))

        agent.start()
        restored = agent.wait_for_event("alarm_state_restored")
        assert (restored["alarms"], restored["out_of_service"]) == (2, 1)
        after = console.wait(
            "a list from the restarted agent",
            lambda: next((d for d in console.on(ALARMS)[n:] if d.get("alarms")), None),
        )
        assert after["out_of_service"] == before["out_of_service"]
        assert entry(after, SP) == entry(before, SP), "still acknowledged after the SIGKILL"
        assert entry(after, BT)["shelved"] == entry(before, BT)["shelved"]  # type: ignore[index]
        agent.wait_for_metric("alarm_commands_refused", 1, reason="retained")
        assert agent.metric("alarm_commands_refused", reason="not_applicable") == 0
        assert agent.metric("alarm_commands", command="out_of_service", result="accepted") == 0
        # The condition is still there: the engine raises it anew, it stays acknowledged.
        console.steps(1, steam_pressure=BREACH["steam_pressure"])
        e = entry(
            console.wait_list(
                lambda d: entry(d, SP)["alert_id"] != entry(before, SP)["alert_id"], "new episode"
            ),
            SP,
        )  # type: ignore[index]
        assert e is not None and e["state"] == "ack_active"
        console.steps(1)
        console.wait_list(gone(SP), "cleared after acknowledgement: normal")
    finally:
        console.close()
        agent.kill()


def test_shipped_acl_lets_only_the_console_user_command_alarms(
    tmp_path: Path, models: Path
) -> None:
    """config/mosquitto.conf as shipped (users, ACL example): the agent runs under its user;
    the console user can acknowledge; the agent's own credentials and anonymous clients cannot."""
    from test_mosquitto_conf import SAMPLE, USERS, adapt, broker

    from harness.net import free_port

    port = free_port()
    conf = adapt(SAMPLE.read_text(encoding="utf-8"), tmp_path / "broker", port)
    with broker(conf, tmp_path / "broker", [port]):
        pw = tmp_path / "agent.pw"
        pw.write_text(USERS["edge-agent"], encoding="utf-8")
        config = lifecycle_config(
            tmp_path, port, models, mqtt={"username": "edge-agent", "password_file": str(pw)}
        )
        with AgentProcess(tmp_path / "agent", config) as agent:
            agent.start()
            console = Console(port, "console", USERS["console"])
            gateway = Console(port, "sensor-gateway", USERS["sensor-gateway"])
            thief = Console(port, "edge-agent", USERS["edge-agent"])
            try:
                gateway.steps(1, steam_pressure=BREACH["steam_pressure"])
                console.wait_list(has(SP, state="unack_active"), "raised, seen by the console")
                ack = {"command": "acknowledge", "alarm": SP, "operator": "mallory"}
                # With the agent's credentials: the broker drops the write, no reply comes.
                with pytest.raises(AssertionError, match="timed out waiting for a reply"):
                    thief.send(timeout=1.5, **ack)
                # Anonymous: not even connected.
                anonymous = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
                result: list[Any] = []
                anonymous.on_connect = lambda *a: result.append(a[3])
                anonymous.connect(HOST, port, keepalive=5)
                anonymous.loop_start()
                console.wait("the anonymous CONNACK", lambda: result)
                anonymous.loop_stop()
                assert result[0].is_failure and "authori" in str(result[0]).lower()
                assert agent.metric("alarm_commands", command="acknowledge", result="accepted") == 0
                console.wait_list(has(SP, state="unack_active"), "still unacknowledged")
                # The console user may.
                reply = console.send(**{**ack, "operator": "alice"})
                assert reply["ok"] is True
                console.wait_list(has(SP, state="ack_active"), "acknowledged by the console")
            finally:
                for c in (console, gateway, thief):
                    c.close()
