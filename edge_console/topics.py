"""The console's side of the topic contract: subscription filters, and topics back to names.

The templates are the agents' (see ``ConsoleTopics``); a filter fills in the plant and
makes every other placeholder a ``+`` level, and :func:`parse` reads plant, unit or
agent id back out of a received topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edge_agent.topics import fill, placeholders, subscription_filter, topic_regex

from .config import ConsoleSettings

Stream = Literal["alerts", "alarms", "scores", "status", "alarm_reply", "telemetry", "sensor"]
#: Most specific first: "alarms/reply" must not be taken for an "alarms" topic.
_ORDER: tuple[Stream, ...] = (
    "alarm_reply", "alarms", "alerts", "scores", "status", "telemetry", "sensor",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TopicRef:
    stream: Stream
    plant: str
    #: The unit for unit topics, the agent id for status topics.
    name: str
    #: The sensor of a per-sensor reading topic.
    sensor: str | None = None


def _filter(template: str, plant: str) -> str:
    return subscription_filter(template, {"plant": plant})


def _regex(template: str) -> re.Pattern[str]:
    """Any plant, unit, agent id or sensor: the console listens to every agent of its plants."""
    return topic_regex(template, {}, dict.fromkeys(placeholders(template), "[^/]+"))


class TopicMap:
    """Filters to subscribe to and a parser for what arrives."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        t = settings.topics
        self._templates: dict[Stream, str] = {
            "alerts": t.alerts,
            "alarms": t.alarms,
            "scores": t.scores,
            "status": t.status,
            "alarm_reply": t.alarm_reply,
        }
        if settings.web.sensor_trends:
            self._templates["telemetry"] = t.telemetry
            self._templates["sensor"] = t.sensor
        self._regexes = {s: _regex(tpl) for s, tpl in self._templates.items()}
        self._plants = frozenset(settings.plants)

    def filters(self) -> list[str]:
        return [
            _filter(tpl, plant)
            for plant in self.settings.plants
            for tpl in self._templates.values()
        ]

    def parse(self, topic: str) -> TopicRef | None:
        """Which stream, plant and unit (or agent) a topic belongs to; None if none of ours."""
        for stream in _ORDER:
            rx = self._regexes.get(stream)
            m = rx.fullmatch(topic) if rx is not None else None
            if m is None:
                continue
            plant = m.group("plant")
            if plant not in self._plants:
                return None
            name = m.group("agent_id") if stream == "status" else m.group("unit")
            return TopicRef(stream, plant, name, m.group("sensor") if stream == "sensor" else None)
        return None

    def command_topic(self, plant: str, unit: str) -> str:
        return fill(self.settings.topics.alarm_command, plant=plant, unit=unit)
