"""The console's configuration and MQTT side, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.config import ConfigError
from edge_console.commands import CommandError, build_command, send_command
from edge_console.config import ConsoleSettings, load_console_settings
from edge_console.state import LiveState
from edge_console.subscriber import Subscriber
from edge_console.topics import TopicMap
from harness.broker import MosquittoBroker
from harness.mqtt_client import MqttClient


def settings(port: int, **extra: Any) -> ConsoleSettings:
    base: dict[str, Any] = {
        "console_id": "t",
        "plants": ["p1", "p2"],
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "keepalive": 5,
            "reconnect_min_seconds": 0.1,
            "reconnect_max_seconds": 0.5,
        },
    }
    base.update(extra)
    return load_console_settings(None, **base)


def alarm_list(unit: str, state: str = "unack_active", acknowledged: bool = False) -> bytes:
    return orjson.dumps(
        {
            "plant": "p1",
            "unit": unit,
            "agent_id": "edge-01",
            "ts": "2026-11-29T05:08:51.000Z",
            "out_of_service": {"unit": False, "sensors": []},
            "alarms": [
                {
                    "alarm": "limit/steam_temperature",
                    "kind": "limit",
                    "subject": "steam_temperature",
                    "state": state,
                    "active": state != "unack_rtn",
                    "acknowledged": acknowledged,
                    "alert_id": "c" * 32,
                    "severity": "high",
                    "raised_at": "2026-11-29T05:08:51.000Z",
                    "message": "steam_temperature HIHI",
                    "shelved": None,
                    "suppressed": False,
                    "out_of_service": False,
                }
            ],
        }
    )


def alert(alert_id: str, state: str = "raised", unit: str = "unit1") -> bytes:
    return orjson.dumps(
        {
            "alert_id": alert_id,
            "plant": "p1",
            "unit": unit,
            "kind": "anomaly",
            "state": state,
            "severity": "high",
            "ts": "2026-11-29T05:08:51.000Z",
            "raised_at": "2026-11-29T05:08:51.000Z",
            "score": 4.2,
            "models": {},
            "top_sensors": [{"sensor": "steam_pressure", "error": 3.0}],
            "limit": None,
            "stale_sensors": [],
            "flood": None,
            "model_set_version": "v1",
            "agent_id": "edge-01",
            "resent": False,
            "received_at": None,
        }
    )


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.scores: list[tuple[str, str, dict[str, Any]]] = []

    def add_event(self, doc: dict[str, Any]) -> None:
        self.events.append(doc)

    def add_score(self, plant: str, unit: str, doc: dict[str, Any]) -> None:
        self.scores.append((plant, unit, doc))


async def until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_config_reports_one_line_per_bad_key(tmp_path: Path, monkeypatch: Any) -> None:
    cfg = tmp_path / "console.yaml"
    cfg.write_text(
        "plants: [p1, 'a/b']\nweb:\n  port: 70000\nusers:\n  - {name: alice, password_hash: x}\n"
        "topics:\n  alarms: plant/{plant}/alarms\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_console_settings(cfg)
    lines = err.value.problems
    assert len(lines) == 4, lines
    assert any(line.startswith("config key web.port:") and "70000" in line for line in lines)
    assert any(line.startswith("config key plants:") for line in lines)
    assert any("users.0.password_hash" in line and "argon2" in line for line in lines)
    assert any("topics.alarms" in line and "{unit}" in line for line in lines)
    assert not any("x'" in line for line in lines if "password_hash" in line)  # not echoed
    monkeypatch.setenv("EDGE_CONSOLE_WEB__PORT", "9000")
    cfg.write_text("plants: [p1]\n", encoding="utf-8")
    s = load_console_settings(cfg)
    assert s.web.port == 9000 and s.web.host == "127.0.0.1"  # binds loopback by default


def test_topic_map_filters_and_parse() -> None:
    tm = TopicMap(settings(1883))
    assert "plant/p1/+/alarms" in tm.filters()
    assert "plant/p2/edge/+/status" in tm.filters()
    ref = tm.parse("plant/p1/unit7/alarms/reply")
    assert ref is not None and (ref.stream, ref.name) == ("alarm_reply", "unit7")
    ref = tm.parse("plant/p2/edge/edge-01/status")
    assert ref is not None and (ref.stream, ref.plant, ref.name) == ("status", "p2", "edge-01")
    assert tm.parse("plant/other/unit1/alerts") is None
    assert tm.command_topic("p1", "unit1") == "plant/p1/unit1/alarms/command"


def test_commands_follow_the_contract() -> None:
    doc = build_command(
        "shelve", operator="alice", alarm="anomaly", duration_seconds=600, one_shot=True
    )
    assert doc["command"] == "shelve" and doc["alarm"] == "anomaly"
    assert doc["duration_seconds"] == 600 and doc["one_shot"] is True
    assert doc["operator"] == "alice" and doc["request_id"]
    oos = build_command("out_of_service", operator="bob", sensor="steam_pressure")
    assert "alarm" not in oos and oos["sensor"] == "steam_pressure"
    with pytest.raises(CommandError):
        build_command("acknowledge", operator="alice")
    with pytest.raises(CommandError):
        build_command("acknowledge", operator="", alarm="anomaly")
    with pytest.raises(CommandError):
        build_command("delete", operator="alice", alarm="anomaly")


def test_subscriber_follows_streams_and_survives_broker_restart(
    mosquitto: MosquittoBroker,
) -> None:
    plant = MqttClient(mosquitto.port, "plant-side")
    plant.publish("plant/p1/unit1/alarms", alarm_list("unit1"), retain=True)
    plant.publish(
        "plant/p1/edge/edge-01/status",
        orjson.dumps({"state": "online", "agent_id": "edge-01", "versions": {"model_set": "v1"}}),
        retain=True,
    )

    async def scenario() -> tuple[LiveState, Sink, Subscriber]:
        state, sink = LiveState(), Sink()
        sub = Subscriber(settings(mosquitto.port), state, sink)
        task = asyncio.create_task(sub.run())
        assert await sub.wait_connected(10)
        # Retained: the alarm list and status arrive right after subscribing.
        await until(lambda: ("p1", "edge-01") in state.agents and state.units)
        assert state.unit("p1", "unit1").state == "alarm"
        assert state.agents[("p1", "edge-01")].model_set == "v1"
        await asyncio.to_thread(
            plant.publish,
            "plant/p1/unit2/scores",
            orjson.dumps({"ts": "2026-11-29T05:00:00Z", "score": -0.5, "decision": False}),
        )
        await asyncio.to_thread(plant.publish, "plant/p1/unit2/alerts", b"{not json")
        await asyncio.to_thread(
            plant.publish, "plant/p1/unit2/alerts", alert("d" * 32, unit="unit2")
        )
        await until(lambda: sink.events and sink.scores)
        assert state.unit("p1", "unit2").state == "alarm"  # open episode from alerts
        assert sub.rejected["bad_json"] == 1

        # Console away: QoS 1 alerts wait in its persistent session.
        sub.stop()
        await task
        await asyncio.to_thread(
            plant.publish, "plant/p1/unit2/alerts", alert("d" * 32, "cleared", "unit2")
        )
        # Broker restart (clean: the session is persisted), then the console comes back.
        await asyncio.to_thread(mosquitto.restart)
        plant2 = await asyncio.to_thread(MqttClient, mosquitto.port, "plant-side-2")
        sub2 = Subscriber(settings(mosquitto.port), state, sink)
        task2 = asyncio.create_task(sub2.run())
        assert await sub2.wait_connected(10)
        await until(lambda: any(e["state"] == "cleared" for e in sink.events))
        assert state.unit("p1", "unit2").state == "normal"
        # Restart while connected: the console reconnects by itself.
        await asyncio.to_thread(mosquitto.restart)
        await until(lambda: sub2.connects >= 2, timeout=15)
        plant2.close()
        plant2 = await asyncio.to_thread(MqttClient, mosquitto.port, "plant-side-3")
        await asyncio.to_thread(
            plant2.publish, "plant/p1/unit3/alerts", alert("e" * 32, unit="unit3")
        )
        await until(lambda: any(e["alert_id"] == "e" * 32 for e in sink.events))

        # A command reaches the command topic; the agent's reply is matched by request_id.
        agent = await asyncio.to_thread(MqttClient, mosquitto.port, "fake-agent")
        await asyncio.to_thread(agent.subscribe, "plant/p1/+/alarms/command")
        doc = build_command("acknowledge", operator="alice", alarm="limit/steam_temperature")

        async def answer() -> None:
            msgs = await asyncio.to_thread(agent.collect, lambda got: bool(got), 5.0)
            cmd = msgs[0].json()
            reply = {"request_id": cmd["request_id"], "command": cmd["command"],
                     "alarm": cmd["alarm"], "ok": True, "ts": "2026-11-29T05:09:00Z"}  # fmt: skip
            await asyncio.to_thread(
                agent.publish, "plant/p1/unit1/alarms/reply", orjson.dumps(reply)
            )

        answering = asyncio.create_task(answer())
        result = await send_command(sub2, state, "p1", "unit1", doc, wait_reply_seconds=5)
        await answering
        assert result.sent and result.ok, result
        sub2.stop()
        await task2
        for c in (plant2, agent):
            c.close()
        return state, sink, sub2

    try:
        _state, sink, _sub = asyncio.run(scenario())
    finally:
        plant.close()
    assert [e["state"] for e in sink.events if e["alert_id"] == "d" * 32] == ["raised", "cleared"]


def test_readings_feed_the_sensor_trends_one_point_per_second() -> None:
    state = LiveState(window_seconds=60)
    sub = Subscriber(settings(1883), state)
    for i in range(10):  # 10 telemetry messages in 2.5 s of plant time
        ts = 1000.0 + i * 0.25
        sub.handle(
            "plant/p1/unit1/telemetry",
            orjson.dumps({"ts": ts, "values": {"a": float(i), "b": True, "c": "x"}}),
        )
    recent = orjson.dumps({"ts": time.time() - 5, "value": 161.5})
    sub.handle("plant/p1/unit1/sensors/steam_pressure", recent)
    sub.handle("plant/p1/unit1/sensors/steam_pressure", b"162.0")  # bare number: now
    sub.handle("plant/p1/unit1/telemetry", b'{"ts": "yesterday", "values": {}}')
    trends = state.unit("p1", "unit1").trends
    assert [v for _, v in trends["a"]] == [0.0, 4.0, 8.0]  # t = 1000, 1001, 1002
    assert "b" not in trends and "c" not in trends  # not numbers: not plotted
    assert [v for _, v in trends["steam_pressure"]] == [161.5, 162.0]
    assert sub.rejected["bad_telemetry"] == 1
    off = Subscriber(settings(1883, web={"sensor_trends": False}), LiveState())
    assert not any("telemetry" in f or "sensors" in f for f in off.topics.filters())
    assert "plant/p1/+/sensors/+" in sub.topics.filters()


def test_shipped_console_config_is_valid_and_documents_every_key() -> None:
    from harness import REPO

    path = REPO / "config" / "console.yaml"
    s = load_console_settings(path)
    assert s.web.host == "127.0.0.1"
    text = path.read_text(encoding="utf-8")
    for name, field in ConsoleSettings.model_fields.items():
        assert f"\n{name}:" in text, name
        sub = getattr(field.annotation, "model_fields", {})
        for key in sub:
            if name == "mqtt" and key not in {"host", "port", "protocol", "client_id"}:
                continue  # the agent's section, documented in config/agent.yaml
            assert f"  {key}:" in text, f"{name}.{key}"


def test_relative_paths_in_the_file_are_relative_to_it(tmp_path: Path, monkeypatch: Any) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    cfg = etc / "console.yaml"
    cfg.write_text("state_dir: state\nmodel_dirs: [models, /abs/models]\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    s = load_console_settings(cfg)
    assert s.state_dir == etc / "state"
    assert s.model_dirs == [etc / "models", Path("/abs/models")]
    assert s.database_url == f"sqlite:///{etc / 'state' / 'console.sqlite'}"
    monkeypatch.setenv("EDGE_CONSOLE_STATE_DIR", "here")  # typed in a shell: the working dir
    assert load_console_settings(cfg).state_dir == Path("here")
