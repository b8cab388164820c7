"""The agent's wildcard subscriptions (edge_agent/daemon/mqtt/subscriptions.py)."""

from __future__ import annotations

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import command_subscriptions, subscription_topics


def test_subscription_topics_are_plant_wildcards() -> None:
    settings = AgentSettings(plant="p7", agent_id="a", units=[{"name": "u1"}])
    assert subscription_topics(settings) == ["plant/p7/+/sensors/+", "plant/p7/+/telemetry"]
    custom = AgentSettings(
        plant="p7",
        agent_id="a",
        units=[{"name": "u1"}],
        topics={"sensor": "site/{plant}/u-{unit}/{sensor}", "telemetry": "site/{plant}/{unit}"},
    )
    assert subscription_topics(custom) == ["site/p7/+/+", "site/p7/+"]


def test_command_subscription_is_a_unit_wildcard() -> None:
    settings = AgentSettings(plant="p7", agent_id="a", units=[{"name": "u1"}])
    assert command_subscriptions(settings) == ["plant/p7/+/alarms/command"]
