"""Tools around the agent, out of the runtime's way: the plant simulator, the simulated-data
publisher, the demo and ``replay`` (the pipeline run over a CSV file, no broker)."""
