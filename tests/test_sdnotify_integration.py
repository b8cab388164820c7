"""systemd notifications from the real agent process, received on a real datagram socket.

The test plays systemd: it binds an AF_UNIX datagram socket, starts `edge-agent run` with
``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` pointing at it, and reads what arrives. READY=1
must wait for the broker connection (so ``systemctl start`` returns only once the agent
can work), WATCHDOG=1 must keep coming, and STOPPING=1 must come on SIGTERM.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from handmade_models import build_model_set

from harness.agent import AgentProcess, agent_config
from harness.broker import MosquittoBroker
from harness.net import free_port

pytestmark = pytest.mark.slow


class FakeSystemd:
    """The receiving end of sd_notify: every datagram, with its arrival time."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, str]] = []

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), data.decode()))

    def wait_for(self, line: str, timeout: float) -> float:
        """Arrival time of the first datagram holding ``line``; polls until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for at, message in self.received:
                if line in message.splitlines():
                    return at
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {line!r} within {timeout}s: {self.received}")
            self.poll(0.1)

    def count(self, line: str) -> int:
        return sum(line in m.splitlines() for _at, m in self.received)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    # AF_UNIX paths are limited to ~107 bytes: pytest's tmp_path can be longer.
    directory = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    fake = FakeSystemd(directory)
    try:
        yield fake
    finally:
        fake.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_ready_after_connect_watchdog_pings_and_stopping_on_sigterm(
    systemd: FakeSystemd, tmp_path: Path
) -> None:
    models = build_model_set(tmp_path / "models", window=30)
    # The broker is not up yet: READY=1 must wait for it.
    broker = MosquittoBroker(tmp_path / "mosquitto", port=free_port())
    agent = AgentProcess(
        tmp_path / "agent",
        agent_config(tmp_path / "agent", broker.port, models),
        env={"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "2000000"},
    )
    try:
        agent.start(wait_ready=False)
        agent.wait_for_event("started")
        systemd.poll(1.5)
        assert systemd.count("READY=1") == 0, systemd.received

        broker.start()
        ready_at = systemd.wait_for("READY=1", timeout=15)
        agent.wait_for_event("ready")
        events = [e.get("event") for e in agent.log_events()]
        assert events.index("mqtt_connected") < events.index("ready")

        # WatchdogSec=2 s: a ping at least every second (half the interval).
        systemd.poll(3.2)
        pings = [at for at, m in systemd.received if "WATCHDOG=1" in m.splitlines()]
        assert len(pings) >= 3, systemd.received
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 2.0, gaps
        assert pings[-1] > ready_at

        rc, seconds = agent.terminate()
        assert rc == 0 and seconds < 5
        systemd.poll(0.3)
        stopping_at = systemd.wait_for("STOPPING=1", timeout=1)
        assert stopping_at > ready_at
        assert systemd.count("READY=1") == 1
    finally:
        agent.kill()
        broker.kill()
