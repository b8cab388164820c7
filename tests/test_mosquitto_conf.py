"""config/mosquitto.conf: the sample really runs, its users and ACL example really apply.

The shipped file is copied with only the machine-specific parts changed (port, file paths, the
user to run as) and started as a real broker. The commented TLS listener is uncommented and
started too, so the sample cannot rot unnoticed.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiomqtt
import pytest

from harness.broker import mosquitto_binary
from harness.net import free_port, port_open
from harness.pki import Pki

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "config" / "mosquitto.conf"
USERS = {
    "edge-agent": "agent-pw-1",
    "sensor-gateway": "gw-pw-2",
    "scada": "scada-pw-3",
    "console": "console-pw-4",
}


def acl_example(conf: str) -> str:
    block = conf.split("# --- ACL example begin\n", 1)[1].split("# --- ACL example end", 1)[0]
    return "\n".join(line.removeprefix("#").strip() for line in block.splitlines()) + "\n"


def adapt(conf: str, workdir: Path, port: int, tls: tuple[int, Pki] | None = None) -> str:
    """The shipped config with this machine's port, paths and user; nothing else changed."""
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
    pw_file, acl_file, data = workdir / "passwd", workdir / "acl", workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run([passwd, *create, "-b", str(pw_file), user, password], check=True)
    acl_file.write_text(acl_example(conf), encoding="utf-8")
    for f in (pw_file, acl_file):
        f.chmod(0o600)

    replacements = {
        r"^listener 1883 127\.0\.0\.1$": f"listener {port} 127.0.0.1",
        r"^password_file .*$": f"password_file {pw_file}",
        r"^acl_file .*$": f"acl_file {acl_file}",
        r"^persistence_location .*$": f"persistence_location {data}/",
    }
    if tls is not None:
        tls_port, pki = tls
        replacements |= {
            r"^#listener 8883 0\.0\.0\.0$": f"listener {tls_port} 127.0.0.1",
            r"^#cafile .*$": f"cafile {pki.ca_cert}",
            r"^#certfile .*$": f"certfile {pki.server_cert}",
            r"^#keyfile .*$": f"keyfile {pki.server_key}",
            r"^#require_certificate (.*)$": r"require_certificate \1",
        }
    for pattern, new in replacements.items():
        conf, n = re.subn(pattern, new, conf, count=1, flags=re.M)
        assert n == 1, f"the sample no longer has a line matching {pattern!r}"
    # As root, mosquitto switches to user "mosquitto", which cannot read our temp files.
    return conf + f"\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"


@contextmanager
def broker(config: str, workdir: Path, ports: list[int]) -> Iterator[Path]:
    """Run mosquitto on ``config``; yields the file its log (stderr) goes to."""
    path, log = workdir / "mosquitto.conf", workdir / "mosquitto.log"
    path.write_text(config, encoding="utf-8")
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(path)], stdout=log_file, stderr=log_file
        )
    try:
        deadline = time.monotonic() + 10
        while not all(port_open(p) for p in ports):
            if proc.poll() is not None:
                pytest.fail(f"mosquitto rejected the config: {log.read_text(errors='replace')}")
            assert time.monotonic() < deadline, "mosquitto did not start listening"
            time.sleep(0.02)
        yield log
    finally:
        proc.kill()
        proc.wait(timeout=10)


def client(
    port: int,
    user: str | None,
    *,
    timeout: float = 5.0,
    tls_params: aiomqtt.TLSParameters | None = None,
) -> aiomqtt.Client:
    password = USERS.get(user) if user else None
    return aiomqtt.Client(
        "127.0.0.1", port, username=user, password=password, timeout=timeout, tls_params=tls_params
    )


async def next_message(c: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        async for message in c.messages:
            return message
    raise AssertionError("unreachable")


def test_sample_has_the_production_settings() -> None:
    conf = SAMPLE.read_text(encoding="utf-8")
    directives = dict(
        line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#")
    )
    assert directives["allow_anonymous"] == "false"
    assert directives["persistence"] == "true"
    assert directives["max_queued_messages"] == "100000"
    assert directives["persistent_client_expiration"] == "7d"
    assert directives["listener"] == "1883 127.0.0.1"
    assert "max_inflight_messages" in directives


async def test_sample_runs_with_users_and_acl(tmp_path: Path) -> None:
    port = free_port()
    config = adapt(SAMPLE.read_text(encoding="utf-8"), tmp_path, port)
    with broker(config, tmp_path, [port]):
        with pytest.raises(aiomqtt.MqttError):
            async with client(port, None):
                pass  # anonymous: refused
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, username="scada", password="wrong"):
                pass

        async with (
            client(port, "edge-agent") as agent,
            client(port, "sensor-gateway") as gateway,
            client(port, "scada") as scada,
        ):
            await agent.subscribe("plant/+/+/sensors/#", qos=1)
            await scada.subscribe("plant/+/+/alerts", qos=1)
            await gateway.subscribe("plant/+/+/alerts", qos=1)  # not allowed by the ACL

            await gateway.publish("plant/p1/u1/sensors/steam_pressure", b"171.5", qos=1)
            reading = await next_message(agent)
            assert reading.payload == b"171.5"

            await agent.publish("plant/p1/u1/alerts", b'{"alert_id": "a1"}', qos=1)
            alert = await next_message(scada)
            assert alert.payload == b'{"alert_id": "a1"}'
            with pytest.raises(TimeoutError):
                await next_message(gateway, timeout=0.3)  # the gateway may not read alerts


async def test_commented_tls_listener_works(tmp_path: Path, mqtt_pki: Pki) -> None:
    port, tls_port = free_port(), free_port()
    config = adapt(SAMPLE.read_text(encoding="utf-8"), tmp_path, port, tls=(tls_port, mqtt_pki))
    tls = aiomqtt.TLSParameters(
        ca_certs=str(mqtt_pki.ca_cert),
        certfile=str(mqtt_pki.client_cert),
        keyfile=str(mqtt_pki.client_key),
    )
    with broker(config, tmp_path, [port, tls_port]) as log:
        async with client(tls_port, "edge-agent", tls_params=tls) as agent:
            await agent.publish("plant/p1/u1/alerts", b"{}", qos=1)
        no_client_cert = aiomqtt.TLSParameters(ca_certs=str(mqtt_pki.ca_cert))
        # require_certificate true. With TLS 1.3 the refusal arrives after the handshake and
        # the client only notices when CONNACK never comes, hence the short timeout.
        with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError)):
            async with client(tls_port, "edge-agent", tls_params=no_client_cert, timeout=1):
                pass
        assert "did not return a certificate" in log.read_text(errors="replace")
