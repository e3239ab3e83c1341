"""Boxes with class names drawn on frames (for saved images/video)."""

from __future__ import annotations

import cv2
import numpy as np

from runtime.detector import Detections


def _color(class_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(class_id * 7919 + 17)
    return tuple(int(c) for c in rng.integers(64, 256, 3))


def draw(image: np.ndarray, det: Detections) -> np.ndarray:
    out = image.copy()
    thickness = max(1, round(sum(out.shape[:2]) / 800))
    for box, score, cls, name in zip(det.boxes, det.scores, det.class_ids, det.names, strict=True):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        color = _color(int(cls))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        label = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(y1, th + base)
        cv2.rectangle(out, (x1, top - th - base), (x1 + tw, top), color, -1)
        cv2.putText(out, label, (x1, top - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out
