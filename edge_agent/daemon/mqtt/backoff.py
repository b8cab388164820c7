"""When to retry a lost connection, and when a retry is worth a line in the log."""

from __future__ import annotations

import random
from collections.abc import Iterator

#: During an outage, a reconnect line at least this often (seconds), whatever the back-off.
RETRY_LOG_EVERY_SECONDS = 300.0


def backoff_delays(min_s: float, max_s: float, rng: random.Random | None = None) -> Iterator[float]:
    """Reconnect delays: exponential from ``min_s``, capped at ``max_s``, with jitter.

    The n-th delay is uniform in ``[min_s, min(max_s, min_s * 2**n)]``: full jitter above a
    floor, so a fleet of agents does not reconnect in lock-step after a broker restart and
    a dead broker is never hammered faster than ``min_s``.
    """
    rng = rng or random.Random()
    ceiling = min_s
    while True:
        yield rng.uniform(min_s, ceiling)
        ceiling = min(max_s, ceiling * 2)


def retry_log_due(attempt: int, seconds_since_logged: float) -> bool:
    """Whether a failed attempt's "reconnecting" line goes to the log at WARNING.

    Attempts 1, 2, 4, 8, … (the back-off doubles too, so lines thin out as it grows), and at
    least one every :data:`RETRY_LOG_EVERY_SECONDS`: a long outage never looks like a hang,
    and a week of it is a few thousand lines, not a hundred thousand.
    """
    return attempt & (attempt - 1) == 0 or seconds_since_logged >= RETRY_LOG_EVERY_SECONDS
