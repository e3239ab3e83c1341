"""Lean inference runtime for the Raspberry Pi: numpy, OpenCV for capture and one backend.

Never imports torch, onnx or onnx-graphsurgeon: a Pi needs only `pip install graphopt[runtime]`.
"""

from runtime.metadata import ModelMeta, parse_metadata
from runtime.preprocess import Letterbox, letterbox, to_input_tensor

__all__ = ["Letterbox", "ModelMeta", "letterbox", "parse_metadata", "to_input_tensor"]
