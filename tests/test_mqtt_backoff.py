"""Reconnect delays and the rate of "reconnecting" lines (edge_agent/daemon/mqtt/backoff.py).

tests/test_paths.py checks the same rate on a running agent's log.
"""

from __future__ import annotations

import random

from edge_agent.daemon.mqtt import RETRY_LOG_EVERY_SECONDS, backoff_delays, retry_log_due


def test_backoff_grows_to_cap_with_jitter_above_floor() -> None:
    gen = backoff_delays(0.5, 8.0, random.Random(3))
    delays = [next(gen) for _ in range(40)]
    assert delays[0] == 0.5
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert all(d <= 0.5 * 2**i for i, d in enumerate(delays))
    assert max(delays[10:]) > 4.0  # reaches the cap region
    assert len({round(d, 6) for d in delays[10:]}) > 20  # jittered, not a constant


def test_retry_lines_thin_out_but_never_stop() -> None:
    due = [n for n in range(1, 70) if retry_log_due(n, 0.0)]
    assert due == [1, 2, 4, 8, 16, 32, 64]
    assert retry_log_due(1000, RETRY_LOG_EVERY_SECONDS)
    assert not retry_log_due(1000, RETRY_LOG_EVERY_SECONDS - 1)
