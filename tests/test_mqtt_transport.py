"""The agent's MQTT link (edge_agent/daemon/mqtt/link.py) against real Mosquitto brokers.

harness/broker.py starts them. The link's parts have their own files: test_mqtt_status.py,
test_mqtt_subscriptions.py, test_mqtt_backoff.py, test_mqtt_intake.py, test_mqtt_properties.py,
test_mqtt_tls.py, test_mqtt_client.py, test_mqtt_log_relay.py, test_mqtt_errors.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog
from structlog.testing import LogCapture

from edge_agent.config import AgentSettings
from edge_agent.daemon.mqtt import (
    MessageProperties,
    MqttLink,
    alert_properties,
    status_topic,
    subscription_topics,
)
from edge_agent.daemon.mqtt import client as mqtt_client
from edge_agent.metrics import Metrics
from harness.broker import MosquittoBroker
from harness.net import free_port
from harness.pki import Pki

PROTOCOLS = ["5", "3.1.1"]
#: ``mqtt.receive_path``: aiomqtt's queue, or paho's callback straight to the handler.
RECEIVE_PATHS = ["queue", "direct"]
REPO = Path(__file__).resolve().parents[1]


# -- helpers ---------------------------------------------------------------------------------


def agent_settings(broker: MosquittoBroker, **mqtt: Any) -> AgentSettings:
    options: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "reconnect_min_seconds": 0.05,
        "reconnect_max_seconds": 0.25,
        "keepalive": 5,
    }
    options.update(mqtt)
    return AgentSettings(agent_id="agent-t1", plant="p1", units=[{"name": "u1"}], mqtt=options)


def capture_logger() -> tuple[Any, LogCapture]:
    """A structlog logger whose events land in a list (nothing global is reconfigured)."""
    cap = LogCapture()
    return structlog.wrap_logger(None, processors=[cap]), cap


def metric(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class RunningLink:
    """An MqttLink running in a task, recording what ``on_message`` receives."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        log: Any = None,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        model_set_version: str | None = "ms-1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.received: list[tuple[str, bytes, float]] = []
        self.link = MqttLink(
            settings,
            self.metrics,
            log if log is not None else capture_logger()[0],
            subscriptions=subscription_topics(settings),
            on_message=lambda topic, payload, arrival: self.received.append(
                (topic, payload, arrival)
            ),
            on_connect=on_connect,
            model_set_version=model_set_version,
            rng=random.Random(1),
            clock=clock,
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningLink:
        self.task = asyncio.create_task(self.link.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(self.link.stop(), 10)
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)

    async def wait_received(self, n: int, timeout: float = 5.0) -> None:
        await eventually(lambda: len(self.received) >= n, timeout)


@contextlib.asynccontextmanager
async def observer(
    broker: MosquittoBroker, *topics: str, protocol: str = "5", **kwargs: Any
) -> AsyncIterator[aiomqtt.Client]:
    """A second, independent client: sees what other clients of the broker would see."""
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"observer-{uuid.uuid4().hex[:8]}",
        protocol=version,
        **kwargs,
    ) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    return await asyncio.wait_for(client.messages.__anext__(), timeout)


async def retained_status(broker: MosquittoBroker, settings: AgentSettings) -> dict[str, Any]:
    async with observer(broker, status_topic(settings)) as obs:
        message = await next_message(obs)
        assert message.retain
        return body_of(message)


def body_of(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes)
    body: dict[str, Any] = json.loads(message.payload)
    return body


# -- connection, status, will -----------------------------------------------------------------


@pytest.mark.parametrize("receive_path", RECEIVE_PATHS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_online_then_stopped_status_and_messages_flow(
    mosquitto: MosquittoBroker, protocol: str, receive_path: str
) -> None:
    settings = agent_settings(mosquitto, protocol=protocol, receive_path=receive_path)
    async with RunningLink(settings) as run:
        assert await run.link.wait_connected(5)
        assert metric(run.metrics, "edge_agent_broker_connected") == 1
        online = await retained_status(mosquitto, settings)
        assert online["state"] == "online"
        assert online["agent_id"] == "agent-t1"
        assert online["versions"]["model_set"] == "ms-1"

        async with observer(mosquitto, protocol=protocol) as pub:
            before = time.time()
            await pub.publish("plant/p1/u1/sensors/steam_temperature", b'{"v":1}', qos=1)
            await pub.publish("plant/p1/u2/telemetry", b'{"values":{}}', qos=1)
            await pub.publish("plant/other/u1/sensors/steam_temperature", b"no", qos=1)
        await run.wait_received(2)
        await asyncio.sleep(0.1)
        topics = [t for t, _, _ in run.received]
        assert topics == ["plant/p1/u1/sensors/steam_temperature", "plant/p1/u2/telemetry"]
        assert run.received[0][1] == b'{"v":1}'
        assert before - 1 <= run.received[0][2] <= time.time()

        async with observer(mosquitto, status_topic(settings)) as watcher:
            assert body_of(await next_message(watcher))["state"] == "online"
            await run.link.stop()
            stopped = body_of(await next_message(watcher))
            assert stopped["state"] == "stopped"
            # A clean DISCONNECT: the broker must not publish the offline Last Will.
            with pytest.raises(TimeoutError):
                await next_message(watcher, timeout=0.3)
    assert not run.link.connected
    assert metric(run.metrics, "edge_agent_broker_connected") == 0
    assert (await retained_status(mosquitto, settings))["state"] == "stopped"


_AGENT_SCRIPT = """
import asyncio, json, sys
import structlog
from edge_agent.config import AgentSettings
from edge_agent.metrics import Metrics
from edge_agent.daemon.mqtt import MqttLink, subscription_topics

async def main():
    settings = AgentSettings(**json.loads(sys.argv[1]))
    link = MqttLink(settings, Metrics(), structlog.get_logger(),
                    subscriptions=subscription_topics(settings), on_message=lambda *a: None)
    task = asyncio.create_task(link.run())
    await link.wait_connected()
    print("connected", flush=True)
    await task

asyncio.run(main())
"""


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_last_will_offline_when_agent_process_dies(
    mosquitto: MosquittoBroker, protocol: str
) -> None:
    settings = agent_settings(mosquitto, protocol=protocol)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _AGENT_SCRIPT,
        settings.model_dump_json(),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        # structlog's default logger also writes to stdout: skip its lines.
        line = b""
        while line.strip() != b"connected":
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the agent process ended before connecting"
        async with observer(mosquitto, status_topic(settings)) as watcher:
            assert body_of(await next_message(watcher))["state"] == "online"
            proc.kill()  # SIGKILL: no DISCONNECT, the broker sees the socket die
            body = body_of(await next_message(watcher))
            assert body["state"] == "offline"
            assert body["agent_id"] == "agent-t1"
        assert (await retained_status(mosquitto, settings))["state"] == "offline"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


# -- reconnecting ------------------------------------------------------------------------------


@pytest.mark.parametrize("receive_path", RECEIVE_PATHS)
async def test_reconnects_after_broker_crash_and_messages_flow_again(
    mosquitto: MosquittoBroker, receive_path: str
) -> None:
    settings = agent_settings(mosquitto, receive_path=receive_path)
    connects: list[float] = []

    async def on_connect() -> None:
        connects.append(time.monotonic())

    async with RunningLink(settings, on_connect=on_connect) as run:
        assert await run.link.wait_connected(5)
        mosquitto.kill()
        await eventually(lambda: not run.link.connected)
        assert metric(run.metrics, "edge_agent_broker_connected") == 0
        assert not await run.link.publish("plant/p1/u1/alerts", b"{}")

        mosquitto.start()
        assert await run.link.wait_connected(5)
        assert metric(run.metrics, "edge_agent_broker_connected") == 1
        assert metric(run.metrics, "edge_agent_reconnects_total") >= 1
        await eventually(lambda: len(connects) == 2)

        async with observer(mosquitto, "plant/p1/u1/alerts") as obs:
            await obs.publish("plant/p1/u1/sensors/load", b"42", qos=1)
            assert await run.link.publish("plant/p1/u1/alerts", b'{"a":1}')
            assert (await next_message(obs)).payload == b'{"a":1}'
        await run.wait_received(1)
        assert run.received[0][:2] == ("plant/p1/u1/sensors/load", b"42")


async def test_unreachable_broker_is_retried_until_it_appears(
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    broker = mosquitto_factory(start=False, port=free_port())
    settings = agent_settings(broker)
    log, cap = capture_logger()
    async with RunningLink(settings, log=log) as run:
        await eventually(lambda: metric(run.metrics, "edge_agent_reconnects_total") >= 3)
        assert not run.link.connected
        assert not await run.link.wait_connected(0.05)
        assert not await run.link.publish("plant/p1/u1/alerts", b"{}")
        failures = [e for e in cap.entries if e["event"] == "mqtt_connect_failed"]
        assert failures[0]["cause"] == "unreachable"
        # Logged once at error level; identical retries only at debug.
        assert [e["log_level"] for e in failures].count("error") == 1

        broker.start()
        assert await run.link.wait_connected(5)
        connected = [e for e in cap.entries if e["event"] == "mqtt_connected"]
        assert connected and connected[-1]["after_failures"] >= 3


async def test_on_connect_runs_beside_the_receive_loop(mosquitto: MosquittoBroker) -> None:
    release = asyncio.Event()

    async def slow_on_connect() -> None:  # e.g. a long outbox drain
        await release.wait()

    settings = agent_settings(mosquitto)
    async with RunningLink(settings, on_connect=slow_on_connect) as run:
        assert await run.link.wait_connected(5)
        async with observer(mosquitto) as pub:
            await pub.publish("plant/p1/u1/sensors/load", b"1", qos=1)
        await run.wait_received(1, timeout=2)  # arrives while on_connect is still busy
        release.set()


@pytest.mark.parametrize("receive_path", RECEIVE_PATHS)
async def test_arrival_is_stamped_with_the_agent_clock(
    mosquitto: MosquittoBroker, receive_path: str
) -> None:
    ticks = iter(range(1000, 2000))
    settings = agent_settings(mosquitto, receive_path=receive_path)
    async with RunningLink(settings, clock=lambda: float(next(ticks))) as run:
        assert await run.link.wait_connected(5)
        async with observer(mosquitto) as pub:
            for i in range(3):
                await pub.publish("plant/p1/u1/sensors/load", str(i).encode(), qos=1)
        await run.wait_received(3)
    arrivals = [a for _, _, a in run.received]
    assert arrivals == sorted(arrivals) and all(1000 <= a < 2000 for a in arrivals)


async def test_cancelling_run_still_reports_stopped(mosquitto: MosquittoBroker) -> None:
    settings = agent_settings(mosquitto)
    link = MqttLink(
        settings,
        Metrics(),
        capture_logger()[0],
        subscriptions=subscription_topics(settings),
        on_message=lambda *_: None,
    )
    task = asyncio.create_task(link.run())
    assert await link.wait_connected(5)
    async with observer(mosquitto, status_topic(settings)) as watcher:
        assert body_of(await next_message(watcher))["state"] == "online"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert body_of(await next_message(watcher))["state"] == "stopped"
        with pytest.raises(TimeoutError):  # clean disconnect: no Last Will
            await next_message(watcher, timeout=0.3)


async def test_concurrent_publishes_are_all_acknowledged(mosquitto: MosquittoBroker) -> None:
    settings = agent_settings(mosquitto)
    n = 300
    async with (
        RunningLink(settings) as run,
        observer(mosquitto, "plant/p1/u1/scores") as obs,
    ):
        assert await run.link.wait_connected(5)
        results = await asyncio.gather(
            *(run.link.publish("plant/p1/u1/scores", str(i).encode()) for i in range(n))
        )
        assert all(results)
        got = {(await next_message(obs)).payload for _ in range(n)}
        assert got == {str(i).encode() for i in range(n)}


@pytest.mark.parametrize("receive_path", RECEIVE_PATHS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_persistent_session_delivers_readings_sent_while_away(
    mosquitto: MosquittoBroker, protocol: str, receive_path: str
) -> None:
    settings = agent_settings(mosquitto, protocol=protocol, receive_path=receive_path)
    async with RunningLink(settings) as first:
        assert await first.link.wait_connected(5)
    # The agent is away; readings keep coming (QoS 1) and the broker queues them for it.
    async with observer(mosquitto, protocol=protocol) as pub:
        for i in range(20):
            await pub.publish(f"plant/p1/u1/sensors/s{i % 4}", str(i).encode(), qos=1)
    mosquitto.restart()  # a clean broker restart keeps the session (persistence file)
    async with RunningLink(settings) as second:
        await second.wait_received(20)
        assert [p for _, p, _ in second.received] == [str(i).encode() for i in range(20)]


# -- MQTT 5 properties -------------------------------------------------------------------------


async def test_alert_properties_reach_an_mqtt5_subscriber(mosquitto: MosquittoBroker) -> None:
    settings = agent_settings(mosquitto)
    async with (
        RunningLink(settings) as run,
        observer(mosquitto, "plant/p1/+/alerts") as obs,
    ):
        assert await run.link.wait_connected(5)
        props = alert_properties("alert-123", "ms-7", expiry_s=600)
        assert await run.link.publish("plant/p1/u1/alerts", b"{}", properties=props)
        msg = await next_message(obs)
        assert msg.properties is not None
        assert dict(msg.properties.UserProperty) == {
            "alert_id": "alert-123",
            "model_set_version": "ms-7",
        }
        assert 590 <= msg.properties.MessageExpiryInterval <= 600

        plain = MessageProperties(message_expiry=30, user_properties={"k": "v"})
        assert await run.link.publish("plant/p1/u1/alerts", b"{}", properties=plain)
        msg = await next_message(obs)
        assert msg.properties is not None
        assert dict(msg.properties.UserProperty) == {"k": "v"}
        # An expiry that does not fit the wire format: refused, logged, never raised.
        too_long = MessageProperties(message_expiry=2**32)
        assert not await run.link.publish("plant/p1/u1/alerts", b"{}", properties=too_long)


async def test_properties_are_left_out_on_mqtt311(mosquitto: MosquittoBroker) -> None:
    settings = agent_settings(mosquitto, protocol="3.1.1")
    async with (
        RunningLink(settings) as run,
        observer(mosquitto, "plant/p1/+/alerts") as obs,
    ):
        assert await run.link.wait_connected(5)
        props = alert_properties("alert-123", "ms-7", expiry_s=600)
        assert await run.link.publish("plant/p1/u1/alerts", b"{}", properties=props)
        msg = await next_message(obs)
        assert not getattr(msg.properties, "UserProperty", None)


# -- TLS and authentication --------------------------------------------------------------------


def _client_tls(pki: Pki, *, cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    if cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


@pytest.mark.parametrize("client_cert", [False, True])
async def test_tls_with_ca_and_client_certificate(
    mosquitto_factory: Callable[..., MosquittoBroker], mqtt_pki: Pki, client_cert: bool
) -> None:
    broker = mosquitto_factory(tls=mqtt_pki, require_certificate=client_cert)
    tls: dict[str, Any] = {"enabled": True, "ca_file": mqtt_pki.ca_cert}
    if client_cert:
        tls |= {"cert_file": mqtt_pki.client_cert, "key_file": mqtt_pki.client_key}
    settings = agent_settings(broker, tls=tls)
    async with RunningLink(settings) as run:
        assert await run.link.wait_connected(5)
        async with observer(broker, tls_context=_client_tls(mqtt_pki, cert=client_cert)) as pub:
            await pub.publish("plant/p1/u1/sensors/load", b"7", qos=1)
        await run.wait_received(1)


async def test_wrong_ca_is_refused_with_a_clear_log_line(
    mosquitto_factory: Callable[..., MosquittoBroker], mqtt_pki: Pki
) -> None:
    broker = mosquitto_factory(tls=mqtt_pki)
    settings = agent_settings(broker, tls={"enabled": True, "ca_file": mqtt_pki.other_ca_cert})
    log, cap = capture_logger()
    async with RunningLink(settings, log=log) as run:
        await eventually(lambda: any(e["event"] == "mqtt_connect_failed" for e in cap.entries))
        assert not await run.link.wait_connected(0.3)
        failure = next(e for e in cap.entries if e["event"] == "mqtt_connect_failed")
        assert failure["cause"] == "tls"
        assert "certificate verify failed" in failure["error"]
        assert "ca_file" in failure["error"]


async def test_missing_client_certificate_is_named_in_the_log(
    mosquitto_factory: Callable[..., MosquittoBroker],
    mqtt_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The broker drops the socket before CONNACK; aiomqtt then only times out, so shorten
    # the wait and check the log names the TLS alert paho saw.
    monkeypatch.setattr(mqtt_client, "CONNECT_TIMEOUT_S", 0.5)
    broker = mosquitto_factory(tls=mqtt_pki, require_certificate=True)
    settings = agent_settings(broker, tls={"enabled": True, "ca_file": mqtt_pki.ca_cert})
    log, cap = capture_logger()
    async with RunningLink(settings, log=log) as run:
        await eventually(lambda: any(e["event"] == "mqtt_connect_failed" for e in cap.entries))
        assert not run.link.connected
    failure = next(e for e in cap.entries if e["event"] == "mqtt_connect_failed")
    assert failure["cause"] == "tls"
    assert "certificate required" in failure["error"]
    assert "cert_file" in failure["error"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_wrong_password_is_refused_and_never_logged(
    mosquitto_factory: Callable[..., MosquittoBroker],
    protocol: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = mosquitto_factory(passwords={"edge": "the-right-one"})
    wrong = "Wr0ng-s3cret-" + uuid.uuid4().hex
    caplog.set_level("DEBUG")
    settings = agent_settings(broker, protocol=protocol, username="edge", password=wrong)
    log, cap = capture_logger()
    async with RunningLink(settings, log=log) as run:
        await eventually(lambda: metric(run.metrics, "edge_agent_reconnects_total") >= 2)
        assert not run.link.connected
    failures = [e for e in cap.entries if e["event"] == "mqtt_connect_failed"]
    assert failures[0]["cause"] == "auth"
    assert "username/password" in failures[0]["error"]
    out, err = capfd.readouterr()
    everything = repr(cap.entries) + caplog.text + out + err
    assert wrong not in everything

    # The right password, read from a password file, gets in.
    pw_file = tmp_path / "mqtt.pw"
    pw_file.write_text("the-right-one\n", encoding="utf-8")
    good = agent_settings(broker, protocol=protocol, username="edge", password_file=pw_file)
    async with RunningLink(good) as run:
        assert await run.link.wait_connected(5)


async def test_unreadable_ca_file_is_reported_and_retried(mosquitto: MosquittoBroker) -> None:
    settings = agent_settings(mosquitto, tls={"enabled": True, "ca_file": "/nonexistent/ca.pem"})
    log, cap = capture_logger()
    async with RunningLink(settings, log=log) as run:
        await eventually(lambda: metric(run.metrics, "edge_agent_reconnects_total") >= 2)
    failure = next(e for e in cap.entries if e["event"] == "mqtt_connect_failed")
    assert failure["cause"] == "config"
