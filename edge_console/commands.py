"""Alarm-lifecycle commands (acknowledge, shelve, out of service, ...) sent to an agent.

Payloads follow the alarm-lifecycle contract exactly; the agent answers on the unit's
``alarm_reply`` topic with the same ``request_id``, which :func:`send_command` waits for.
The operator is always the signed-in user, never a value from the browser.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .state import LiveState
from .subscriber import Subscriber

Command = Literal["acknowledge", "shelve", "unshelve", "out_of_service", "in_service"]
COMMANDS: tuple[Command, ...] = (
    "acknowledge",
    "shelve",
    "unshelve",
    "out_of_service",
    "in_service",
)
_NEEDS_ALARM = frozenset({"acknowledge", "shelve", "unshelve"})


class CommandError(ValueError):
    """A command that must not be sent (missing alarm, unknown command, ...)."""


def build_command(
    command: str,
    *,
    operator: str,
    alarm: str | None = None,
    sensor: str | None = None,
    comment: str | None = None,
    duration_seconds: float | None = None,
    one_shot: bool | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    if command not in COMMANDS:
        raise CommandError(f"unknown command {command!r} (one of {', '.join(COMMANDS)})")
    if not operator:
        raise CommandError("operator is required")
    if command in _NEEDS_ALARM and not alarm:
        raise CommandError(f"{command} needs an alarm")
    doc: dict[str, Any] = {
        "command": command,
        "operator": operator,
        "request_id": request_id or uuid.uuid4().hex,
    }
    if command in _NEEDS_ALARM:
        doc["alarm"] = alarm
    if command in ("out_of_service", "in_service") and sensor:
        doc["sensor"] = sensor
    if comment:
        doc["comment"] = comment
    if command == "shelve":
        if duration_seconds is not None:
            if duration_seconds <= 0:
                raise CommandError("duration_seconds must be positive")
            doc["duration_seconds"] = int(duration_seconds)
        if one_shot is not None:
            doc["one_shot"] = bool(one_shot)
    return doc


@dataclass(frozen=True)
class CommandResult:
    sent: bool
    request_id: str
    #: The agent's reply, or None if none came within the wait.
    reply: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.sent and self.reply is not None and bool(self.reply.get("ok"))

    def describe(self) -> str:
        if not self.sent:
            return "not sent: the console is not connected to the broker"
        if self.reply is None:
            return "sent; no reply from the agent yet"
        if self.reply.get("ok"):
            return "accepted by the agent"
        return f"refused by the agent: {self.reply.get('reason', 'no reason given')}"


async def send_command(
    subscriber: Subscriber,
    state: LiveState,
    plant: str,
    unit: str,
    doc: dict[str, Any],
    wait_reply_seconds: float = 3.0,
) -> CommandResult:
    """Publish (QoS 1) and wait up to ``wait_reply_seconds`` for the agent's reply."""
    request_id = str(doc["request_id"])
    topic = subscriber.topics.command_topic(plant, unit)
    sent = await subscriber.publish(topic, orjson.dumps(doc))
    subscriber.log.info(
        "console_command_sent" if sent else "console_command_not_sent",
        plant=plant,
        unit=unit,
        command=doc.get("command"),
        alarm=doc.get("alarm"),
        operator=doc.get("operator"),
        request_id=request_id,
    )
    reply = None
    deadline = time.monotonic() + wait_reply_seconds
    while sent and time.monotonic() < deadline:
        reply = state.reply_for(request_id)
        if reply is not None:
            break
        await asyncio.sleep(0.05)
    return CommandResult(sent, request_id, reply)
