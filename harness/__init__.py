"""Test and benchmark harness: the real parts the agent meets, started and driven from Python.

Shared by ``tests/`` (the repository root is on ``sys.path`` via pytest's ``pythonpath``) and
``benchmarks/`` (each script puts the root on ``sys.path``); not part of the wheel
(``pyproject.toml`` packages only ``edge_agent``, ``training`` and ``edge_console``). One module
a concern:

- :mod:`harness.net`: the loopback host, free ports, "is this port open".
- :mod:`harness.process`: waiting for a condition, stopping and pinning subprocesses.
- :mod:`harness.broker` / :mod:`harness.pki`: a real Mosquitto in a temporary directory;
  throw-away TLS certificates for it.
- :mod:`harness.agent` / :mod:`harness.console`: ``edge-agent run`` and ``edge-console run``
  as subprocesses.
- :mod:`harness.mqtt_client`: a synchronous paho client to publish and collect.
- :mod:`harness.raw_mqtt` / :mod:`harness.raw_subscriber`: MQTT 3.1.1 packets on a bare
  socket, for loads and misbehaving clients a library client would not produce.
- :mod:`harness.metrics`: scraping ``/metrics`` and reading the Prometheus text.
- :mod:`harness.telemetry`: simulated readings as the agent's telemetry messages.
"""

from __future__ import annotations

from pathlib import Path

#: The repository checkout the harness belongs to.
REPO = Path(__file__).resolve().parents[1]
