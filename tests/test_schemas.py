"""The JSON Schemas published for subscribers are the ones the code validates and sends with.

Every file under ``edge_agent/schemas`` is generated (``edge-agent schema``) from the
definition the agent uses; these tests fail while a committed copy is stale, and check that
the generated alert, scores, alarm reply and alarm list schemas say what the wire carries.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from edge_agent.cli import main
from edge_agent.pipeline.alarm_state import (
    AlarmEntry,
    AlarmList,
    OutOfServiceMarks,
    Shelve,
    alarm_list_json_schema,
)
from edge_agent.pipeline.alerts import (
    AUDIT_ONLY_FIELDS,
    Alert,
    AuditDetail,
    FloodDetail,
    LimitBreach,
    ModelVerdict,
    Scores,
    SensorError,
    alert_json_schema,
    rfc3339,
    scores_json_schema,
)
from edge_agent.pipeline.commands import AlarmReply, reply_json_schema
from edge_agent.schema_files import SCHEMA_DIR, SCHEMAS, schema_text, stale_schemas

T0 = 1_795_946_400.0


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_is_current(name: str) -> None:
    committed = (SCHEMA_DIR / name).read_text(encoding="utf-8")
    assert committed == schema_text(name), f"{name} is stale: run `edge-agent schema`"


def test_every_committed_schema_file_is_generated() -> None:
    assert {p.name for p in SCHEMA_DIR.glob("*.json")} == set(SCHEMAS)


def test_schema_command_writes_and_check_fails_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", "--out", str(tmp_path)]) == 0
    assert stale_schemas(tmp_path) == []
    assert main(["schema", "--out", str(tmp_path), "--check"]) == 0
    alert_file = tmp_path / "alert.schema.json"
    doc = json.loads(alert_file.read_text(encoding="utf-8"))
    del doc["properties"]["received_at"]  # a hand edit, or a field added to Alert only
    alert_file.write_text(json.dumps(doc), encoding="utf-8")
    capsys.readouterr()
    assert main(["schema", "--out", str(tmp_path), "--check"]) == 2
    assert "alert.schema.json is stale" in capsys.readouterr().err
    assert main(["schema", "--out", str(tmp_path)]) == 0
    assert stale_schemas(tmp_path) == []


def alert(**kw: object) -> Alert:
    base: dict[str, object] = {
        "alert_id": "0123456789abcdef0123456789abcdef",
        "plant": "p1",
        "unit": "u1",
        "kind": "anomaly",
        "state": "raised",
        "severity": "high",
        "ts": T0 + 0.25,
        "raised_at": T0,
        "model_set_version": "v1",
        "agent_id": "edge-01",
    }
    return Alert(**{**base, **kw})  # type: ignore[arg-type]


ALERT_SCHEMA = jsonschema.Draft202012Validator(alert_json_schema())


def test_every_alert_key_is_required_but_the_audit_ones() -> None:
    schema = alert_json_schema()
    assert set(schema["required"]) == set(schema["properties"]) - set(AUDIT_ONLY_FIELDS)
    assert schema["additionalProperties"] is False
    doc = alert().to_dict()
    assert list(doc) == schema["required"]  # wire order = field order
    assert doc["ts"] == rfc3339(T0 + 0.25) and doc["received_at"] is None
    ALERT_SCHEMA.validate(doc)
    for key in schema["required"]:
        missing = dict(doc)
        del missing[key]
        assert not ALERT_SCHEMA.is_valid(missing), key


def test_audit_event_carries_operator_and_comment_and_parses_back() -> None:
    event = alert(
        kind="maintenance",
        state="out_of_service",
        operator="alice",
        comment=None,
        sensor="steam_pressure",
    )
    doc = orjson.loads(event.to_json())
    assert (doc["operator"], doc["comment"], doc["sensor"]) == ("alice", None, "steam_pressure")
    ALERT_SCHEMA.validate(doc)
    assert event.audit == AuditDetail("alice", None, "steam_pressure")
    assert Alert.from_json(event.to_json()) == event
    assert not ALERT_SCHEMA.is_valid({**doc, "operator": None})
    assert "operator" not in alert().to_dict() and alert().audit is None


def test_alert_round_trips_and_refuses_what_the_schema_refuses() -> None:
    full = alert(
        kind="limit",
        score=1.5,
        models={"iforest": ModelVerdict(2.0, 1.0, True)},
        top_sensors=(SensorError("steam_temperature", 3.0),),
        limit=LimitBreach("steam_temperature", "HIHI", 580.0, 590.0, "degC"),
        stale_sensors=("load",),
        sensor="steam_temperature",
        arrival=T0 + 0.250123,
        alarm="limit/steam_temperature",
    )
    payload = full.to_json()
    ALERT_SCHEMA.validate(orjson.loads(payload))
    assert orjson.loads(payload)["received_at"] == "2026-11-29T10:00:00.250123Z"
    assert Alert.from_json(payload) == full
    # A newer agent's extra key is ignored; what the schema forbids is not an alert.
    assert Alert.from_json(payload[:-1] + b',"new_field":1}') == full
    for bad in ({"kind": "nope"}, {"alert_id": "XYZ"}, {"ts": None}, {"flood": {"x": 1}}):
        doc = {**orjson.loads(payload), **bad}
        assert not ALERT_SCHEMA.is_valid(doc), bad
        assert Alert.from_json(orjson.dumps(doc)) is None, bad
    no_offset = {**orjson.loads(payload), "ts": "2026-11-29T10:00:00"}
    assert Alert.from_json(orjson.dumps(no_offset)) is None
    assert Alert.from_json(b"[1]") is None and Alert.from_json(b"{") is None


def test_flood_summary_timestamps_are_rfc3339() -> None:
    summary = alert(
        kind="flood",
        state="summary",
        flood=FloodDetail(3, {"limit": 3}, T0, T0 + 600),
    )
    doc = summary.to_dict()
    assert doc["flood"]["window_end"] == rfc3339(T0 + 600)
    ALERT_SCHEMA.validate(doc)
    assert Alert.from_json(summary.to_json()) == summary


def test_scores_message_is_what_pydantic_makes_of_the_definition() -> None:
    """The scores message is serialised by orjson (fast path); it must be exactly what the
    pydantic view of the same dataclass gives, and valid against the generated schema."""
    from pydantic import TypeAdapter

    scores = Scores(
        plant="p1",
        unit="u1",
        ts=rfc3339(T0),
        score=None,
        decision=None,
        models={"iforest": ModelVerdict(0.5, 1.0, False)},
        top_sensors=(SensorError("load", 0.1),),
        stale=True,
        alarms={"anomaly": False},
        model_set_version="v1",
        agent_id="edge-01",
    )
    adapter = TypeAdapter(Scores)
    assert orjson.loads(scores.to_json()) == orjson.loads(adapter.dump_json(scores))
    jsonschema.Draft202012Validator(scores_json_schema()).validate(orjson.loads(scores.to_json()))
    assert adapter.validate_json(scores.to_json()) == scores


REPLY_SCHEMA = jsonschema.Draft202012Validator(reply_json_schema())
LIST_SCHEMA = jsonschema.Draft202012Validator(alarm_list_json_schema())


def test_alarm_reply_sends_reason_only_on_a_refusal_and_the_schema_says_so() -> None:
    ok = AlarmReply(request_id="r1", command="shelve", alarm="anomaly", ok=True, ts=T0)
    doc = orjson.loads(ok.to_json())
    assert list(doc) == ["request_id", "command", "alarm", "ok", "ts"]  # wire order
    assert doc["ts"] == rfc3339(T0)
    REPLY_SCHEMA.validate(doc)
    refused = AlarmReply(
        request_id=None, command=None, alarm=None, ok=False, ts=T0, reason="not valid JSON"
    )
    bad = orjson.loads(refused.to_json())
    assert list(bad) == ["request_id", "command", "alarm", "ok", "ts", "reason"]
    REPLY_SCHEMA.validate(bad)
    without_reason = {k: v for k, v in bad.items() if k != "reason"}
    assert not REPLY_SCHEMA.is_valid(without_reason), "a refusal must say why"
    for key in doc:
        assert not REPLY_SCHEMA.is_valid({k: v for k, v in doc.items() if k != key}), key
    assert not REPLY_SCHEMA.is_valid({**doc, "extra": 1})
    assert not REPLY_SCHEMA.is_valid({**bad, "reason": None})


def _entry(shelved: Shelve | None) -> AlarmEntry:
    return AlarmEntry(
        unit="u1",
        alarm="limit/steam_pressure",
        kind="limit",
        active=True,
        acknowledged=False,
        alert_id="a" * 32,
        severity="high",
        raised_at=T0 + 0.5,
        message="Steam pressure above HI",
        shelved=shelved,
    )


def test_alarm_list_is_what_the_generated_schema_describes() -> None:
    shelves = [
        None,
        Shelve("alice", T0 + 60, False, "noisy", T0),
        Shelve("bob", None, True, None, T0),
    ]
    doc = AlarmList(
        plant="p1",
        unit="u1",
        agent_id="edge-01",
        ts=T0 + 1,
        out_of_service=OutOfServiceMarks(False, ("load",)),
        suppressed_by_design=True,
        alarms=tuple(_entry(s).listed(False, False) for s in shelves),
    ).to_dict()
    assert orjson.loads(orjson.dumps(doc)) == doc
    schema = alarm_list_json_schema()
    assert list(doc) == schema["required"]  # every key always sent, in field order
    LIST_SCHEMA.validate(doc)
    first, second, third = doc["alarms"]
    assert first["state"] == "unack_active" and first["subject"] == "steam_pressure"
    assert first["raised_at"] == rfc3339(T0 + 0.5) and first["shelved"] is None
    assert second["shelved"] == {
        "by": "alice",
        "until": rfc3339(T0 + 60),
        "one_shot": False,
        "comment": "noisy",
    }
    assert third["shelved"]["until"] is None and third["shelved"]["one_shot"] is True
    assert doc["out_of_service"] == {"unit": False, "sensors": ["load"]}
    entry = schema["$defs"]["ListedAlarm"]
    assert set(entry["required"]) == set(first)
    for key in first:
        broken = {**doc, "alarms": [{k: v for k, v in first.items() if k != key}]}
        assert not LIST_SCHEMA.is_valid(broken), key
    for bad in ({"state": "cleared"}, {"severity": "urgent"}, {"shelved": {"by": "x"}}):
        assert not LIST_SCHEMA.is_valid({**doc, "alarms": [{**first, **bad}]}), bad
