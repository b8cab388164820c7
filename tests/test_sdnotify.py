"""sd_notify: real AF_UNIX datagram sockets standing in for systemd's notification socket."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.daemon.sdnotify import SystemdNotifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode("utf-8").split("\n")


def test_messages_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready(status="connected to broker")
    assert received(sock) == ["READY=1", "STATUS=connected to broker"]
    assert n.watchdog()
    assert received(sock) == ["WATCHDOG=1"]
    assert n.status("3 units\nscoring")  # a newline would start a new assignment
    assert received(sock) == ["STATUS=3 units scoring"]
    assert n.reloading()
    reload_msg = received(sock)
    assert reload_msg[0] == "RELOADING=1" and reload_msg[1].startswith("MONOTONIC_USEC=")
    assert n.stopping()
    assert received(sock) == ["STOPPING=1"]
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        n = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert received(sock) == ["READY=1"]
        n.close()


def test_no_socket_means_no_op() -> None:
    n = SystemdNotifier({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    assert n.watchdog_interval() is None


def test_vanished_socket_never_raises(tmp_path: Path) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    assert n.watchdog() is False  # systemd restarting: reported, not raised


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    mine = str(os.getpid())
    assert SystemdNotifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 15.0
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": mine}
    assert SystemdNotifier(env).watchdog_interval() == 15.0
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier(env).watchdog_interval() is None  # meant for another process
    assert SystemdNotifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None
    assert SystemdNotifier({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None


def test_reads_the_real_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = SystemdNotifier()
    assert n.watchdog_interval() == 1.0
    assert n.watchdog()
    assert received(sock) == ["WATCHDOG=1"]
    n.close()
