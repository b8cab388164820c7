"""What the agent subscribes to: this plant's wildcard filters, made by :mod:`edge_agent.topics`."""

from __future__ import annotations

from edge_agent.config import AgentSettings
from edge_agent.topics import subscription_filter


def _wildcard_topic(template: str, settings: AgentSettings) -> str:
    """Fill the plant and agent id into a topic template; every other placeholder is ``+``."""
    return subscription_filter(template, {"plant": settings.plant, "agent_id": settings.agent_id})


def subscription_topics(settings: AgentSettings) -> list[str]:
    """Wildcard subscriptions for this plant: one for single readings, one for telemetry."""
    topics = [
        _wildcard_topic(settings.topics.sensor, settings),
        _wildcard_topic(settings.topics.telemetry, settings),
    ]
    return list(dict.fromkeys(topics))


def command_subscriptions(settings: AgentSettings) -> list[str]:
    """The wildcard subscription for alarm commands to this plant's units (alarm lifecycle)."""
    return [_wildcard_topic(settings.topics.alarm_command, settings)]
