"""graphopt: an ONNX graph-surgery compiler for YOLO detectors on the Raspberry Pi 5."""

__version__ = "0.1.0"
