"""Picking a free TCP port on loopback: the demo's broker and console, and the test harness.

One function so that the demo and the tests/benchmarks (``harness.net``) agree on how a port
is chosen; a port free now can be taken a moment later, so callers that start a server on
it retry on a new one when the bind fails.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(preferred: int = 0, host: str = LOOPBACK) -> int:
    """``preferred`` if it can be bound on ``host`` now, else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError(f"no free port on {host}")
