"""edge_agent.topics: validation, matching, subscription filters and filling agree."""

from __future__ import annotations

import pytest

from edge_agent.topics import check_template, fill, placeholders, subscription_filter, topic_regex

SENSOR = "plant/{plant}/{unit}/sensors/{sensor}"
STATUS = "plant/{plant}/edge-{agent_id}/status"


def test_fill_and_match_round_trip() -> None:
    topic = fill(SENSOR, plant="p1", unit="u-7", sensor="steam temp")
    assert topic == "plant/p1/u-7/sensors/steam temp"
    rx = topic_regex(SENSOR, {"plant": "p1"}, {"unit": "[^/]+", "sensor": "[^/]+"})
    m = rx.fullmatch(topic)
    assert m is not None and m.group("unit") == "u-7" and m.group("sensor") == "steam temp"
    assert rx.fullmatch("plant/p2/u-7/sensors/x") is None  # another plant
    assert rx.fullmatch(topic + "/extra") is None


def test_subscription_filter_fills_what_it_knows_and_wildcards_the_rest() -> None:
    assert subscription_filter(SENSOR, {"plant": "p1"}) == "plant/p1/+/sensors/+"
    # a level that mixes text and an unknown placeholder becomes + as a whole
    assert subscription_filter(STATUS, {"plant": "p1"}) == "plant/p1/+/status"
    assert subscription_filter(STATUS, {"plant": "p1", "agent_id": "a"}) == "plant/p1/edge-a/status"


def test_every_topic_a_filter_admits_is_one_the_regex_parses() -> None:
    rx = topic_regex(STATUS, {}, dict.fromkeys(placeholders(STATUS), "[^/]+"))
    m = rx.fullmatch(fill(STATUS, plant="p9", agent_id="box1"))
    assert m is not None and m.groupdict() == {"plant": "p9", "agent_id": "box1"}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("plant/+/{unit}", "wildcards"),
        ("", "non-empty"),
        ("plant/{plant}/{site}", "unknown placeholder {site}"),
        ("plant/{unit!r}", "no conversion"),
        ("plant/{plant}", "needs the placeholder {unit}"),
        ("plant/{unit}/{unit}", "must appear only once"),
        ("plant/{unit", "not a valid topic template"),
    ],
)
def test_check_template_refuses_with_the_reason(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("+", r"\+")):
        check_template(template, {"plant", "unit"}, {"unit"})


def test_regex_refuses_duplicate_missing_and_foreign_placeholders() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        topic_regex("a/{unit}/{unit}", {}, {"unit": "x"})
    with pytest.raises(ValueError, match="needs"):
        topic_regex("a/{plant}", {"plant": "p"}, {"unit": "x"})
    with pytest.raises(ValueError, match="not allowed here"):
        topic_regex("a/{sensor}/{unit}", {}, {"unit": "x"})
