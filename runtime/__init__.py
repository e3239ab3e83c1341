"""Lean inference runtime for the Raspberry Pi: numpy, OpenCV for capture and one backend.

Never imports torch, onnx or onnx-graphsurgeon: a Pi needs only `pip install "graphopt[runtime]"`.

    from runtime import Detector
    det = Detector("model.onnx")          # or an NCNN folder from `graphopt convert`
    result = det(cv2.imread("bus.jpg"))   # boxes xyxy in the image's pixels, scores, class ids, names
"""

import os as _os

from runtime.files import max_image_pixels as _max_image_pixels

# OpenCV's own pixel limit, read once when cv2 loads, backs up load_image's header check for the few
# formats imagesize does not read (EXR, Radiance HDR, PFM); a value the user set is kept.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(_max_image_pixels()))

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
