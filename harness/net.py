"""Loopback networking for the harness: the host every part listens on, free ports."""

from __future__ import annotations

import contextlib
import socket

from edge_agent.tools.ports import LOOPBACK, free_port

HOST = LOOPBACK

__all__ = ["HOST", "free_port", "port_open"]


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False
