"""Reference YOLO zoo: our own compact blocks and small model builders for fixtures and demos."""

from frontends.zoo.models import (
    BUILDERS,
    YOLO,
    ZooMeta,
    gelan_tiny,
    randomize_bn,
    single_branch_from_dual,
    yolov5_tiny,
    yolov8_tiny,
    yolov9_dual_tiny,
)

__all__ = [
    "BUILDERS",
    "YOLO",
    "ZooMeta",
    "gelan_tiny",
    "randomize_bn",
    "single_branch_from_dual",
    "yolov5_tiny",
    "yolov8_tiny",
    "yolov9_dual_tiny",
]
