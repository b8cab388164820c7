"""edge-agent: anomaly detection for thermal power plants, run next to the sensors."""

__version__ = "0.1.0"
