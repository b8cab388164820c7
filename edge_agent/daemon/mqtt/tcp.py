"""The TCP option on the broker connection that keeps readings from waiting in the kernel.

The agent both reads (readings) and writes (scores, alerts) on one connection, so Linux
puts the socket in *pingpong* mode and delays its ACKs, expecting to carry them on the next
reply. The broker sends with Nagle's algorithm (Mosquitto's default, ``set_tcp_nodelay
false``): a small packet waits until the previous one is acknowledged. Together they hold
readings in the broker's send buffer until the agent happens to write. Traced during
``benchmarks/latency.py`` at 1 k msgs/s: a reading reached the agent's ``recv`` 10.7 ms
(p50) / 28 ms (p99) after it was published, 0.4 / 6 ms with :func:`ack_now` after each read.

:func:`ack_now` after every ``recv``: setting ``TCP_QUICKACK`` sends the ACK of what was just
read at once, which releases the broker's next packet. Linux leaves quick-ACK mode again as
soon as the agent writes, so it is set per read (one ``setsockopt`` per wake-up of up to
16 KB). Best effort: a socket without the option (not Linux, a websocket wrapper) is left as
it is. ``TCP_NODELAY`` on the agent's own writes was measured beside it and gave nothing
beyond run-to-run noise (steady p99 at a subscriber 51–64 ms without, 51–62 ms with).
"""

from __future__ import annotations

import socket
from typing import Any

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def ack_now(sock: Any) -> None:
    """Acknowledge what has been read at once (Linux ``TCP_QUICKACK``); else nothing."""
    if _QUICKACK is None:
        return
    try:  # noqa: SIM105 - once per read: cheaper than contextlib.suppress
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except (AttributeError, OSError):
        pass
