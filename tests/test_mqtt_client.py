"""The configured aiomqtt client (edge_agent/daemon/mqtt/client.py); no network I/O here.

That the session persists and the Last Will fires on a real broker is checked in
tests/test_mqtt_transport.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import client as mqtt_client


def settings(**mqtt: object) -> AgentSettings:
    return AgentSettings(agent_id="agent-t1", plant="p1", units=[{"name": "u1"}], mqtt=mqtt)


async def test_build_client_uses_fixed_identifier() -> None:
    client = mqtt_client.build_client(settings())
    assert client.identifier == "edge-agent-agent-t1"
    assert client.pending_calls_threshold == mqtt_client.PENDING_CALLS_WARN


async def test_an_unreadable_password_file_raises_before_any_network_io(tmp_path: Path) -> None:
    s = settings(username="edge", password_file=tmp_path / "missing.pw")
    with pytest.raises(OSError):
        mqtt_client.build_client(s)
