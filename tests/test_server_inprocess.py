"""The server's lifecycle in the test's own event loop (like uvicorn's ``run_server`` helper).

A real :class:`Server` runs against a real Mosquitto with a temporary state directory and the
hand-made models, for what the subprocess tests cannot reach: the watchdog withholding pings
when the tick loop stalls (on a real sd_notify datagram socket), a crashed essential task
ending ``serve`` with an error, and score back-pressure with its drop counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from handmade_models import build_model_set, normal_series

from edge_agent.config import AgentSettings
from edge_agent.daemon.alert_publisher import AlertPublisher
from edge_agent.daemon.server import Server, TaskCrashed
from edge_agent.metrics import Metrics
from edge_agent.pipeline.engine import TickResult
from harness.agent import agent_config
from harness.broker import MosquittoBroker
from harness.telemetry import PLANT, telemetry_payload

WINDOW = 10


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW)


def settings_for(tmp_path: Path, broker: MosquittoBroker, models: Path, **kw: Any) -> AgentSettings:
    return AgentSettings(**agent_config(tmp_path, broker.port, models, **kw))


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(server: Server) -> AsyncIterator[asyncio.Task[None]]:
    """Serve in a task until the link is connected; stop (and wait) on the way out."""
    task = asyncio.create_task(server.serve())
    await until(lambda: task.done() or (server.link is not None and server.link.connected))
    if task.done():
        task.result()  # raises what startup raised
    try:
        yield task
    finally:
        server.handle_exit()
        with contextlib.suppress(TaskCrashed):
            await asyncio.wait_for(task, 10)


class FakeSystemd:
    """The receiving end of sd_notify: a unix datagram socket the test binds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.received: list[tuple[float, str]] = []

    def poll(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            self.received.append((time.monotonic(), data.decode()))
        return [m for _, m in self.received]

    async def pings_during(self, seconds: float) -> int:
        self.poll()
        start = time.monotonic()
        await asyncio.sleep(seconds)
        self.poll()
        return sum(1 for t, m in self.received if t >= start and "WATCHDOG=1" in m)


async def test_watchdog_pings_stop_when_the_tick_loop_stalls(
    tmp_path: Path, mosquitto: MosquittoBroker, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    systemd = FakeSystemd(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(systemd.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    server = Server(settings_for(tmp_path, mosquitto, models_dir), metrics=Metrics())
    async with running(server):
        await until(lambda: any("READY=1" in m for m in systemd.poll()))
        assert await systemd.pings_during(1.0) >= 5  # alive: pings keep coming
        [tick] = [t for t in server._state.tasks if t.get_name() == "tick"]
        tick.cancel()  # the tick loop stops; the event loop (and the watchdog task) runs on
        await asyncio.sleep(0.8)  # pings may go on while the last tick is recent (0.5 s)
        assert await systemd.pings_during(1.0) == 0
    assert any("STOPPING=1" in m for m in systemd.poll())


async def test_a_crashed_essential_task_ends_serve_with_an_error(
    tmp_path: Path, mosquitto: MosquittoBroker, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()

    async def crash(self: AlertPublisher) -> None:
        await started.wait()
        raise RuntimeError("boom")

    monkeypatch.setattr(AlertPublisher, "run", crash)
    server = Server(settings_for(tmp_path, mosquitto, models_dir), metrics=Metrics())
    task = asyncio.create_task(server.serve())
    await until(lambda: server.link is not None and server.link.connected)
    started.set()
    with pytest.raises(TaskCrashed, match="boom"):
        await asyncio.wait_for(task, 10)
    assert server.link is not None and not server.link.connected  # shut down cleanly


async def test_a_crashed_helper_task_does_not_end_serve(
    tmp_path: Path, mosquitto: MosquittoBroker, models_dir: Path
) -> None:
    server = Server(settings_for(tmp_path, mosquitto, models_dir), metrics=Metrics())
    async with running(server) as task:

        async def fail() -> None:
            raise RuntimeError("not essential")

        server._spawn(fail(), "reload")
        await asyncio.sleep(0.3)
        assert not task.done()


def scored(results: list[TickResult]) -> int:
    return sum(1 for r in results for s in r.steps if s.scored)


@pytest.mark.parametrize("receive_path", ["queue", "direct"])
async def test_score_back_pressure_drops_and_counts(
    tmp_path: Path, mosquitto: MosquittoBroker, models_dir: Path, receive_path: str
) -> None:
    """Scores go to paho without waiting (publish_nowait); beyond ``max_in_flight`` packets
    not yet written to the socket they are dropped as ``backlog``."""
    units = [f"u{i}" for i in range(4)]
    metrics = Metrics()
    server = Server(
        settings_for(
            tmp_path, mosquitto, models_dir, units=units, mqtt={"receive_path": receive_path}
        ),
        metrics=metrics,
    )
    ticks: list[TickResult] = []
    server.hooks.on_tick = ticks.append
    received: list[str] = []

    async def collect(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            received.append(str(message.topic))

    def dropped(reason: str) -> float:
        v = metrics.registry.get_sample_value(
            "edge_agent_publish_dropped_total", {"reason": reason}
        )
        return v or 0.0

    async with (
        aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="scores-sub") as client,
        running(server),
    ):
        await client.subscribe(f"plant/{PLANT}/+/scores")
        collector = asyncio.create_task(collect(client))
        assert server.scores is not None
        server.scores.max_in_flight = 3
        series = normal_series(WINDOW + 5, seed=4)
        t0 = time.time() - len(series) - 5

        def burst(rows: Any, start: float) -> None:
            # The link's callback, called the way the link calls it: all before one tick.
            for i, row in enumerate(rows):
                for unit in units:
                    topic = f"plant/{PLANT}/{unit}/telemetry"
                    server._on_message(topic, telemetry_payload(start + i, row), time.time())

        burst(series, t0)
        await until(lambda: scored(ticks) >= 4 * 6)
        await until(lambda: server.scores is not None and server.scores.in_flight == 0)
        await until(lambda: len(received) >= 3)
        await asyncio.sleep(0.3)
        first_scored = scored(ticks)
        assert dropped("backlog") > 0
        assert len(received) + dropped("backlog") + dropped("failed") == first_scored
        assert len(received) <= 3 * len(ticks)  # never more than max_in_flight per tick
        # The counter came back down: a later step is published again.
        before = len(received)
        burst(normal_series(1, seed=5), t0 + len(series))
        await until(lambda: len(received) > before)
        collector.cancel()
        # Broker gone: a tick's scores are dropped and counted as disconnected.
        mosquitto.kill()
        await until(lambda: server.link is not None and not server.link.connected)
        assert server.scores.in_flight == 0
        last = next(r for r in reversed(ticks) if any(s.scored for s in r.steps))
        gone = dropped("disconnected")
        server.scores.publish(last)
        assert dropped("disconnected") == gone + len(last.steps)


async def test_sighup_reload_applies_a_changed_stride(
    tmp_path: Path, mosquitto: MosquittoBroker, models_dir: Path
) -> None:
    """The bug: ``models.stride`` changed on SIGHUP was silently ignored."""
    import yaml

    from edge_agent.config import load_settings

    config = agent_config(tmp_path, mosquitto.port, models_dir)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    server = Server(load_settings(path), config_path=path, metrics=Metrics())
    async with running(server):
        config["models"]["stride"] = 3
        config["alarm"]["on_delay"] = 4
        path.write_text(yaml.safe_dump(config))
        report = await server.reload()
        assert report is not None
        assert report.applied == ["models.stride"]
        assert list(report.refused) == ["alarm.on_delay"]
        assert server.engine is not None and server.engine.settings.models.stride == 3
        assert server.settings.models.stride == 3 and server.settings.alarm.on_delay == 3


async def test_the_agent_logs_what_training_warned_about_its_model_set(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    from structlog.testing import capture_logs

    models = build_model_set(tmp_path / "models", window=WINDOW)
    doc = json.loads((models / "manifest.json").read_text())
    doc["metrics"]["warnings"] = ["the fit part covers 6.7 min of operation"]
    (models / "manifest.json").write_text(json.dumps(doc))
    with capture_logs() as logs:
        server = Server(settings_for(tmp_path, mosquitto, models))
        async with running(server):
            pass
    [line] = [e for e in logs if e["event"] == "model set training warning"]
    assert line["log_level"] == "warning"
    assert line["warning"] == "the fit part covers 6.7 min of operation"
    assert line["model_set"] == doc["model_set_version"]
