"""Offline training: fits the anomaly models and exports them to ONNX with a manifest."""
