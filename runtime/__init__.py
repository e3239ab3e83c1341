"""Lean inference runtime for the Raspberry Pi: numpy, OpenCV for capture and one backend.

Never imports torch, onnx or onnx-graphsurgeon: a Pi needs only `pip install "graphopt[runtime]"`.

    from runtime import Detector
    det = Detector("model.onnx")          # or an NCNN folder from `graphopt convert`
    result = det(cv2.imread("bus.jpg"))   # boxes xyxy in the image's pixels, scores, class ids, names
"""

from runtime.detector import Detections, Detector
from runtime.metadata import ModelMeta, parse_metadata
from runtime.preprocess import Letterbox, Preprocess, letterbox, to_input_tensor

__all__ = [
    "Detections",
    "Detector",
    "Letterbox",
    "ModelMeta",
    "Preprocess",
    "letterbox",
    "parse_metadata",
    "to_input_tensor",
]
