"""The TCP options on the broker connection that keep readings and scores from waiting in
the kernel.

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
it is.

:data:`SOCKET_OPTIONS` (``TCP_NODELAY``, set once the socket is connected): the same stall
the other way. A tick publishes its scores in one burst of small packets. With Nagle's
algorithm the kernel holds a small packet while an earlier one is unacknowledged, and the
broker, which also writes to the agent, may delay that ACK by 40 ms. Traced in the 125-unit
burst of ``benchmarks/latency.py``: all 141 packets of a tick left paho within 2–4 ms, yet
in 5–7 of 20 bursts the last 2–59 scores reached the subscriber 40–44 ms after the rest.
Interleaved runs, two each, without → with the option: burst p99 at the subscriber 91.9 /
88.2 → 62.6 / 48.4 ms; with the broker's own ``set_tcp_nodelay`` (as
``config/mosquitto.conf`` ships it) 88.3 / 83.6 → 67.7 / 56.5 ms and no burst stalled. What
stalls remain with Mosquitto's defaults are its own Nagle on the hop to the subscriber. At
steady 1 k msgs/s, and at 20 k per-sensor msgs/s (throughput and CPU), it changed nothing
beyond run-to-run noise.
"""

from __future__ import annotations

import socket
from typing import Any

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

#: ``(level, option, value)`` for ``setsockopt`` on the broker connection (aiomqtt's
#: ``socket_options``: applied after connecting, skipped for a websocket wrapper).
SOCKET_OPTIONS: tuple[tuple[int, int, int], ...] = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def ack_now(sock: Any) -> None:
    """Acknowledge what has been read at once (Linux ``TCP_QUICKACK``); else nothing."""
    if _QUICKACK is None:
        return
    try:  # noqa: SIM105 - once per read: cheaper than contextlib.suppress
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except (AttributeError, OSError):
        pass
