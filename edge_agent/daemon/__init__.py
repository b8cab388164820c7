"""The daemon's I/O around the pure pipeline: the MQTT link, the outbox, alert and score
publishing, the alarm store, the metrics server, sd_notify and signals.

:class:`edge_agent.daemon.server.Server` owns the lifecycle; everything the agent decides is
decided in :mod:`edge_agent.pipeline`.
"""
