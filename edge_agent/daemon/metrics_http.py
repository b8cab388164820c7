"""The Prometheus ``/metrics`` endpoint (prometheus_client's threaded HTTP server)."""

from __future__ import annotations

import errno
from typing import Any

from edge_agent.config import ConfigError, MetricsSettings
from edge_agent.metrics import Metrics


class MetricsEndpoint:
    """Serves ``metrics`` on ``settings.host:settings.port``; ``port`` is the bound port."""

    def __init__(self, settings: MetricsSettings, metrics: Metrics) -> None:
        from prometheus_client import start_http_server

        try:
            httpd, _thread = start_http_server(
                settings.port, addr=settings.host, registry=metrics.registry
            )
        except OSError as exc:
            raise ConfigError([f"config key metrics.port: {_problem(settings, exc)}"]) from None
        self._httpd: Any = httpd
        self.port = int(httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _problem(m: MetricsSettings, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {m.port} on {m.host} is already in use (another agent or "
            "`edge-agent demo` running?); set metrics.port (EDGE_AGENT_METRICS__PORT) "
            "to a free port, or 0 for any free port"
        )
    return f"cannot listen on {m.host}:{m.port}: {exc.strerror or exc}"
