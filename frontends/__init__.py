"""PyTorch → ONNX exporters per checkpoint family, and the reference YOLO zoo used by tests."""
