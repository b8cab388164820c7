"""The pure alarm lifecycle (edge_agent.pipeline.lifecycle): every ISA-18.2 transition,
with a fake clock."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.config import AgentSettings, ConfigError
from edge_agent.daemon.alarm_store import AlarmStore
from edge_agent.metrics import Metrics
from edge_agent.pipeline.alarm import alarm_key
from edge_agent.pipeline.alarm_kpi import AlarmKpis
from edge_agent.pipeline.alarm_rules import CommandRefused
from edge_agent.pipeline.alarm_state import OutOfServiceMarks
from edge_agent.pipeline.alerts import Alert, LimitBreach
from edge_agent.pipeline.commands import CommandError, parse_command
from edge_agent.pipeline.lifecycle import AlarmLifecycle
from edge_agent.pipeline.sensors import THERMAL_UNIT_SENSORS, sensor_names

SENSORS = sensor_names(THERMAL_UNIT_SENSORS)
LOAD = SENSORS.index("load")
T0 = 1_800_000_000.0


def settings(**kw: Any) -> AgentSettings:
    base: dict[str, Any] = {
        "agent_id": "a1",
        "plant": "p1",
        "units": [
            {
                "name": "u1",
                "limits": {"steam_pressure": {"hi": 165.0}, "bearing_temperature": {"hi": 75}},
            }
        ],
        "alarm": {"shelve_default_seconds": 600, "shelve_max_seconds": 3600},
        "suppression": {"sensor": "load", "below": 100.0, "safety_sensors": ["steam_pressure"]},
    }
    base.update(kw)
    return AgentSettings(**base)


def lifecycle(**kw: Any) -> AlarmLifecycle:
    return AlarmLifecycle(settings(**kw), SENSORS, lambda: "v1")


def limit_alert(state: str, sensor: str = "steam_pressure", ts: float = T0, aid: str = "a" * 32):
    return Alert(
        alert_id=aid, plant="p1", unit="u1", kind="limit", state=state,  # type: ignore[arg-type]
        severity="medium", ts=ts, raised_at=T0, model_set_version="v1", agent_id="a1",
        limit=LimitBreach(sensor, "HI", 165.0, 170.0), alarm=alarm_key("limit", f"{sensor}:HI"),
    )  # fmt: skip


def anomaly_alert(state: str, ts: float = T0, aid: str = "b" * 32) -> Alert:
    return Alert(
        alert_id=aid, plant="p1", unit="u1", kind="anomaly", state=state,  # type: ignore[arg-type]
        severity="high", ts=ts, raised_at=T0, model_set_version="v1", agent_id="a1", score=4.0,
        alarm=alarm_key("anomaly", ""),
    )  # fmt: skip


def cmd(**fields: Any):
    import orjson

    return parse_command(orjson.dumps({"operator": "alice", **fields}))


def listed(lc: AlarmLifecycle, alarm: str = "limit/steam_pressure") -> dict[str, Any] | None:
    doc = lc.snapshot("u1", T0).to_dict()
    found = [a for a in doc["alarms"] if a["alarm"] == alarm]
    return found[0] if found else None


def row(load: float) -> np.ndarray:
    r = np.full(len(SENSORS), 1.0, dtype=np.float32)
    r[LOAD] = load
    return r


def test_alarm_key_names_the_sensor_of_either_limit_subject_form() -> None:
    assert alarm_key("limit", "steam_pressure:HIHI") == "limit/steam_pressure"
    assert alarm_key("limit", "steam_pressure") == "limit/steam_pressure"
    assert alarm_key("anomaly", "") == "anomaly"


def test_raise_ack_clear_is_unack_active_then_ack_active_then_normal() -> None:
    lc = lifecycle()
    assert lc.on_alert(limit_alert("raised"), T0) == [limit_alert("raised")]
    assert listed(lc)["state"] == "unack_active"  # type: ignore[index]
    result = lc.command("u1", cmd(command="acknowledge", alarm="limit/steam_pressure"), T0 + 1)
    (audit,) = result.alerts
    assert (audit.state, audit.alert_id, audit.audit.operator) == (
        "acknowledged",
        "a" * 32,
        "alice",
    )  # type: ignore[union-attr]
    assert audit.to_dict()["operator"] == "alice" and audit.to_dict()["alarm"] == result.alarm
    e = listed(lc)
    assert e is not None and (e["state"], e["active"], e["acknowledged"]) == (
        "ack_active",
        True,
        True,
    )
    assert lc.on_alert(limit_alert("cleared", ts=T0 + 5), T0 + 5) == [
        limit_alert("cleared", ts=T0 + 5)
    ]
    assert listed(lc) is None, "acknowledged and cleared: normal, not listed"


def test_clear_before_ack_is_unack_rtn_until_acknowledged() -> None:
    lc = lifecycle()
    lc.on_alert(limit_alert("raised"), T0)
    lc.on_alert(limit_alert("cleared"), T0 + 3)
    assert listed(lc)["state"] == "unack_rtn"  # type: ignore[index]
    with pytest.raises(CommandRefused, match="one-shot shelve needs an active alarm"):
        lc.command("u1", cmd(command="shelve", alarm="limit/steam_pressure", one_shot=True), T0)
    lc.command("u1", cmd(command="acknowledge", alarm="limit/steam_pressure"), T0 + 4)
    assert listed(lc) is None
    with pytest.raises(CommandRefused, match="nothing to acknowledge") as refused:
        lc.command("u1", cmd(command="acknowledge", alarm="limit/steam_pressure"), T0 + 5)
    assert refused.value.code == "not_applicable"


def test_raise_in_unack_rtn_starts_a_new_unacknowledged_episode() -> None:
    lc = lifecycle()
    lc.on_alert(limit_alert("raised"), T0)
    lc.on_alert(limit_alert("cleared"), T0 + 3)
    lc.on_alert(limit_alert("raised", aid="c" * 32, ts=T0 + 9), T0 + 9)
    e = listed(lc)
    assert e is not None and (e["state"], e["alert_id"]) == ("unack_active", "c" * 32)


def test_timed_shelve_holds_the_raise_and_releases_it_on_expiry() -> None:
    lc = lifecycle()
    result = lc.command(
        "u1",
        cmd(command="shelve", alarm="limit/steam_pressure", duration_seconds=60, comment="repair"),
        T0,
    )
    assert [a.state for a in result.alerts] == ["shelved"]
    assert listed(lc)["shelved"]["until"] is not None  # type: ignore[index]
    assert lc.on_alert(limit_alert("raised"), T0 + 1) == [], "shelved: not annunciated"
    e = listed(lc)
    assert e is not None and e["active"] and e["shelved"]["by"] == "alice"
    assert lc.expire(T0 + 59) == []
    out = lc.expire(T0 + 60)
    assert [(a.state, a.kind) for a in out] == [("shelve_expired", "limit"), ("raised", "limit")]
    assert listed(lc)["shelved"] is None  # type: ignore[index]
    # Its clear is published now that its raise was.
    assert lc.on_alert(limit_alert("cleared"), T0 + 70) == [limit_alert("cleared")]


def test_default_and_maximum_shelve_durations() -> None:
    lc = lifecycle()
    lc.on_alert(limit_alert("raised"), T0)
    lc.command("u1", cmd(command="shelve", alarm="limit/steam_pressure"), T0)
    assert lc.entries("u1")[0].shelved.until == T0 + 600  # type: ignore[union-attr]
    with pytest.raises(CommandRefused, match="exceeds the maximum of 3600") as refused:
        lc.command(
            "u1",
            cmd(command="shelve", alarm="limit/bearing_temperature", duration_seconds=3601),
            T0,
        )
    assert refused.value.code == "bad_duration"
    with pytest.raises(CommandError, match="duration_seconds"):
        cmd(command="shelve", alarm="limit/steam_pressure", duration_seconds=0)


def test_a_clear_while_shelved_of_a_held_alarm_needs_no_ack() -> None:
    lc = lifecycle()
    lc.command("u1", cmd(command="shelve", alarm="limit/steam_pressure"), T0)
    lc.on_alert(limit_alert("raised"), T0 + 1)
    assert lc.on_alert(limit_alert("cleared"), T0 + 2) == [], "its raise was held: so is the clear"
    e = listed(lc)
    assert e is not None and e["state"] == "normal" and e["shelved"] is not None
    out = lc.command("u1", cmd(command="unshelve", alarm="limit/steam_pressure"), T0 + 3).alerts
    assert [a.state for a in out] == ["unshelved"]
    assert listed(lc) is None


def test_one_shot_shelve_ends_when_the_alarm_clears() -> None:
    lc = lifecycle()
    lc.on_alert(limit_alert("raised"), T0)
    lc.command("u1", cmd(command="shelve", alarm="limit/steam_pressure", one_shot=True), T0 + 1)
    assert listed(lc)["shelved"] == {
        "by": "alice",
        "until": None,
        "one_shot": True,
        "comment": None,
    }  # type: ignore[index]
    assert lc.expire(T0 + 10 * 3600) == [], "one-shot without duration does not time out"
    out = lc.on_alert(limit_alert("cleared"), T0 + 2)
    assert [a.state for a in out] == ["cleared", "shelve_expired"]
    e = listed(lc)
    assert e is not None and e["state"] == "unack_rtn" and e["shelved"] is None


def test_suppression_by_design_holds_anomaly_but_not_a_safety_limit() -> None:
    lc = lifecycle()
    lc.observe_step("u1", row(50.0), True, T0)
    assert "u1" in lc.changed
    assert lc.on_alert(anomaly_alert("raised"), T0) == []
    assert lc.on_alert(limit_alert("raised"), T0) == [limit_alert("raised")], "safety sensor"
    held = limit_alert("raised", sensor="bearing_temperature", aid="d" * 32)
    assert lc.on_alert(held, T0) == [], "limit alarms of other sensors are suppressed"
    assert listed(lc, "anomaly")["suppressed"] is True  # type: ignore[index]
    assert listed(lc)["suppressed"] is False  # type: ignore[index]
    assert lc.snapshot("u1", T0).suppressed_by_design is True
    lc.observe_step("u1", row(float("nan")), True, T0 + 1)  # missing load: state kept
    assert lc.snapshot("u1", T0).suppressed_by_design is True
    released = lc.observe_step("u1", row(500.0), True, T0 + 2)
    assert sorted(a.alarm for a in released) == ["anomaly", "limit/bearing_temperature"]  # type: ignore[type-var]
    assert listed(lc, "anomaly")["suppressed"] is False  # type: ignore[index]


def test_out_of_service_per_sensor_and_per_unit() -> None:
    lc = lifecycle()
    out = lc.command("u1", cmd(command="out_of_service", sensor="steam_pressure"), T0).alerts
    assert [(a.kind, a.state, a.audit.sensor) for a in out] == [
        ("maintenance", "out_of_service", "steam_pressure")
    ]  # type: ignore[union-attr]
    assert lc.on_alert(limit_alert("raised"), T0 + 1) == []
    assert lc.on_alert(anomaly_alert("raised"), T0 + 1) == [anomaly_alert("raised")]
    assert listed(lc)["out_of_service"] is True  # type: ignore[index]
    assert lc.snapshot("u1", T0).out_of_service == OutOfServiceMarks(False, ("steam_pressure",))
    with pytest.raises(CommandRefused, match="already out of service"):
        lc.command("u1", cmd(command="out_of_service", sensor="steam_pressure"), T0)
    back = lc.command("u1", cmd(command="in_service", sensor="steam_pressure"), T0 + 2).alerts
    assert [a.state for a in back] == ["in_service", "raised"], "the held raise comes out"
    lc.command("u1", cmd(command="out_of_service"), T0 + 3)
    assert lc.snapshot("u1", T0).out_of_service.unit is True
    assert lc.on_alert(limit_alert("raised", sensor="bearing_temperature", aid="e" * 32), T0) == []


@pytest.mark.parametrize(
    ("unit", "fields", "code"),
    [
        ("u2", {"command": "acknowledge", "alarm": "anomaly"}, "wrong_unit"),
        ("u1", {"command": "acknowledge", "alarm": "anomaly", "unit": "u2"}, "wrong_unit"),
        ("u1", {"command": "shelve", "alarm": "limit/feedwater_flow"}, "unknown_alarm"),
        ("u1", {"command": "shelve", "alarm": "nonsense"}, "unknown_alarm"),
        ("u1", {"command": "out_of_service", "sensor": "nope"}, "unknown_alarm"),
        ("u1", {"command": "unshelve", "alarm": "anomaly"}, "not_applicable"),
        ("u1", {"command": "in_service"}, "not_applicable"),
    ],
)
def test_refusals_name_the_problem(unit: str, fields: dict[str, Any], code: str) -> None:
    with pytest.raises(CommandRefused) as refused:
        lifecycle().command(unit, cmd(**fields), T0)
    assert refused.value.code == code and refused.value.reason


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"{not json", "bad_json", "not valid JSON"),
        (b"[1, 2]", "schema", "must be a JSON object"),
        (b'{"operator": "a"}', "schema", "command: field required"),
        (b'{"command": "reboot", "operator": "a"}', "schema", "unknown command"),
        (b'{"command": "acknowledge", "operator": "a"}', "schema", "alarm: Field required"),
        (b'{"command": "acknowledge", "alarm": "anomaly"}', "schema", "operator: Field required"),
        (b'{"command": "acknowledge", "alarm": "anomaly", "operator": " "}', "schema", "operator"),
        (b'{"command": "acknowledge", "alarm": "anomaly", "operator": "a", "who": 1}', "schema",
         "unknown field 'who'"),
        (b'{"command": "shelve", "alarm": "anomaly", "operator": "a", "one_shot": "yes"}',
         "schema", "one_shot"),
    ],
)  # fmt: skip
def test_bad_payloads_are_refused_with_the_first_problem(
    payload: bytes, code: str, reason: str
) -> None:
    with pytest.raises(CommandError) as err:
        parse_command(payload)
    assert err.value.code == code and reason in err.value.reason, err.value.reason


def test_committed_command_schema_agrees_with_the_parser() -> None:
    import json

    import jsonschema

    from edge_agent.pipeline.commands import command_json_schema

    path = Path(__file__).resolve().parents[1] / "edge_agent/schemas/alarm_command.schema.json"
    committed = json.loads(path.read_text(encoding="utf-8"))
    assert committed == command_json_schema(), "regenerate alarm_command.schema.json"
    validator = jsonschema.Draft202012Validator(committed)
    good = [
        {"command": "acknowledge", "alarm": "limit/steam_pressure", "operator": "a"},
        {"command": "shelve", "alarm": "anomaly", "operator": "a", "duration_seconds": 5},
        {"command": "out_of_service", "operator": "a", "request_id": "r1"},
    ]
    bad = [
        {"command": "acknowledge", "operator": "a"},
        {"command": "shelve", "alarm": "anomaly", "operator": "a", "duration_seconds": 0},
        {"command": "in_service", "operator": "a", "alarm": "anomaly"},
        {"command": "reboot", "operator": "a"},
    ]
    for doc in good:
        assert validator.is_valid(doc), doc
        cmd(**doc)
    for doc in bad:
        assert not validator.is_valid(doc), doc
        with pytest.raises(CommandError):
            cmd(**doc)


def test_state_survives_in_the_store(tmp_path: Path) -> None:
    metrics = Metrics()
    store = AlarmStore(tmp_path / "alarms.sqlite", metrics)
    lc = AlarmLifecycle(settings(), SENSORS, lambda: "v1", store=store)
    lc.on_alert(limit_alert("raised"), T0)
    lc.command("u1", cmd(command="acknowledge", alarm="limit/steam_pressure"), T0)
    lc.command(
        "u1", cmd(command="shelve", alarm="limit/bearing_temperature", duration_seconds=99), T0
    )
    lc.command("u1", cmd(command="out_of_service", sensor="load"), T0)
    store.close()

    store = AlarmStore(tmp_path / "alarms.sqlite", metrics)
    again = AlarmLifecycle(settings(), SENSORS, lambda: "v1", store=store)
    again.restore(*store.load())
    assert again.snapshot("u1", T0) == lc.snapshot("u1", T0)
    assert again.expire(T0 + 99)[0].state == "shelve_expired"
    assert metrics.alarm_store_errors._value.get() == 0


def test_restored_active_alarm_returns_to_normal_if_the_engine_does_not_raise_it() -> None:
    lc = lifecycle()
    lc.on_alert(limit_alert("raised"), T0)
    (entry,) = lc.entries("u1")
    fresh = lifecycle(alarm={"on_delay": 2})
    fresh.restore([entry], [])
    for k in range(2):
        fresh.observe_step("u1", row(500.0), False, T0 + k)
        fresh.confirm_restored("u1", set)
        assert listed(fresh)["active"] is True  # type: ignore[index]
    fresh.observe_step("u1", row(500.0), False, T0 + 3)
    fresh.confirm_restored("u1", set)
    assert listed(fresh)["state"] == "unack_rtn"  # type: ignore[index]


def test_restored_alarm_raised_again_keeps_its_acknowledgement() -> None:
    lc = lifecycle()
    lc.on_alert(limit_alert("raised"), T0)
    lc.command("u1", cmd(command="acknowledge", alarm="limit/steam_pressure"), T0)
    (entry,) = lc.entries("u1")
    fresh = lifecycle()
    fresh.restore([entry], [])
    fresh.on_alert(limit_alert("raised", aid="f" * 32, ts=T0 + 50), T0 + 50)
    e = listed(fresh)
    assert e is not None and (e["state"], e["alert_id"]) == ("ack_active", "f" * 32)


def test_kpis_rate_chattering_standing_and_floods() -> None:
    k = AlarmKpis(flood_max=10)
    for i in range(3):
        k.transition("u1", "limit/x", T0 + i, raised=i % 2 == 0)
    v = k.values("u1", T0 + 5, [T0 - 25 * 3600, T0])
    assert (v.rate_10min, v.chattering, v.standing, v.flood_periods) == (2, 1, 1, 0)
    assert k.values("u1", T0 + 61, []).chattering == 0
    k.raised("u1", T0 + 100, count=9)
    v = k.values("u1", T0 + 100, [])
    assert (v.rate_10min, v.flood_periods, v.in_flood) == (11, 1, True)
    k.raised("u1", T0 + 101, count=5)
    assert k.values("u1", T0 + 101, []).flood_periods == 1, "one period, counted once"
    assert k.values("u1", T0 + 800, []).rate_10min == 0


def test_suppression_config_names_model_sensors() -> None:
    with pytest.raises(ConfigError, match=r"suppression\.sensor"):
        lifecycle(suppression={"sensor": "lod", "below": 1.0})


def test_unusable_store_is_logged_counted_and_the_state_kept_in_memory(tmp_path: Path) -> None:
    metrics = Metrics()
    blocked = tmp_path / "alarms.sqlite"
    blocked.mkdir()  # a directory where the file should be: SQLite cannot open it
    store = AlarmStore(blocked, metrics)
    lc = AlarmLifecycle(settings(), SENSORS, lambda: "v1", store=store)
    assert store.load() == ([], [])
    lc.on_alert(limit_alert("raised"), T0)
    lc.command("u1", cmd(command="acknowledge", alarm="limit/steam_pressure"), T0)
    assert listed(lc)["state"] == "ack_active"  # type: ignore[index]
    assert metrics.alarm_store_errors._value.get() >= 3


def test_command_subscription_is_the_plant_wildcard_of_the_template() -> None:
    from edge_agent.daemon.mqtt import command_subscriptions

    assert command_subscriptions(settings()) == ["plant/p1/+/alarms/command"]
    custom = settings(topics={"alarm_command": "site/{plant}/ops/{unit}/cmd"})
    assert command_subscriptions(custom) == ["site/p1/ops/+/cmd"]


def test_two_limit_levels_of_one_sensor_are_one_alarm_until_both_clear() -> None:
    """While limits are alarmed per level (subjects "sensor:HI", "sensor:HIHI"), both levels
    are the one operator alarm limit/<sensor>: a higher level re-alarms it, and it is not
    back to normal before the last level clears."""
    lc = lifecycle()
    hi = limit_alert("raised", aid="1" * 32)
    hihi = replace(limit_alert("raised", aid="2" * 32), severity="high")
    lc.on_alert(hi, T0)
    lc.command("u1", cmd(command="acknowledge", alarm="limit/steam_pressure"), T0)
    assert lc.on_alert(hihi, T0 + 1) == [hihi]
    e = listed(lc)
    assert e is not None and (e["state"], e["severity"], e["alert_id"]) == (
        "unack_active", "high", "2" * 32,
    )  # fmt: skip
    lc.on_alert(replace(hihi, state="cleared"), T0 + 2)
    assert listed(lc)["active"] is True, "HI is still breached"  # type: ignore[index]
    lc.on_alert(replace(hi, state="cleared"), T0 + 3)
    assert listed(lc)["state"] == "unack_rtn"  # type: ignore[index]
