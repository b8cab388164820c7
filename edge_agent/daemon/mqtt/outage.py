"""What the log says about an outage: each distinct cause once, retries at a thinning rate.

A broker that is down for a week must not fill the disk, and one that is down for a minute
must not look like a hang: the first failure of each kind is an ERROR, identical retries go
to debug, and the "reconnecting" line is a WARNING at the rate of
:func:`~edge_agent.daemon.mqtt.backoff.retry_log_due`.
"""

from __future__ import annotations

import time
from typing import Any

from structlog.typing import FilteringBoundLogger

from edge_agent.config import AgentSettings

from .backoff import retry_log_due
from .errors import describe_error
from .log_relay import LibraryWarning


class OutageLog:
    """Counts the failures of the current outage and logs them, connected or not."""

    def __init__(self, settings: AgentSettings, log: FilteringBoundLogger) -> None:
        self.settings = settings
        self.log = log
        self.failures = 0
        self.last_error: str | None = None
        #: monotonic times: first failure of the current outage, last reconnect line logged
        self._down_since = 0.0
        self._retry_logged = float("-inf")

    def failed(
        self,
        exc: BaseException,
        socket_error: LibraryWarning | None = None,
        *,
        was_connected: bool = False,
    ) -> None:
        """Log a failure once per distinct cause; identical retries go to debug."""
        cause, message = describe_error(exc, socket_error, while_connected=was_connected)
        if self.failures == 0:
            self._down_since = time.monotonic()
            self._retry_logged = float("-inf")
        self.failures += 1
        m = self.settings.mqtt
        fields: dict[str, Any] = {
            "cause": cause,
            "error": message,
            "host": m.host,
            "port": m.port,
            "attempt": self.failures,
        }
        if was_connected:
            self.log.warning("mqtt_connection_lost", **fields)
        elif message != self.last_error:
            self.log.error("mqtt_connect_failed", **fields)
        else:
            self.log.debug("mqtt_connect_failed", **fields)
        self.last_error = message

    def retrying(self, delay: float) -> None:
        """The wait before the next attempt: WARNING at a back-off-aware rate, else debug."""
        now = time.monotonic()
        attempt = max(1, self.failures)
        fields: dict[str, Any] = {
            "attempt": attempt,
            "next_delay_seconds": round(delay, 2),
            "down_for_seconds": round(now - self._down_since, 1) if self.failures else 0.0,
            "host": self.settings.mqtt.host,
            "port": self.settings.mqtt.port,
            "error": self.last_error,
        }
        if retry_log_due(attempt, now - self._retry_logged):
            self._retry_logged = now
            self.log.warning("mqtt_reconnecting", **fields)
        else:
            self.log.debug("mqtt_reconnecting", **fields)

    def connected(self) -> None:
        """The outage (if any) is over: say so, with how many attempts it took."""
        m = self.settings.mqtt
        self.log.info(
            "mqtt_connected",
            host=m.host,
            port=m.port,
            client_id=self.settings.client_id,
            protocol=m.protocol,
            tls=m.tls.enabled,
            after_failures=self.failures,
        )
        self.failures = 0
        self.last_error = None
