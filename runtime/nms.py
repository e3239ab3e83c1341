"""Class-aware NMS with OpenCV's batched NMS (no NMS of our own)."""

from __future__ import annotations

import cv2
import numpy as np

from runtime.decode import Candidates

MAX_NMS_BOXES = 30000  # as YOLOv5/Ultralytics: keep the best before NMS, bounding its cost


def nms(c: Candidates, iou: float, max_det: int = 300) -> Candidates:
    if c.final or len(c.scores) == 0:
        return c
    if len(c.scores) > MAX_NMS_BOXES:
        top = np.argsort(-c.scores)[:MAX_NMS_BOXES]
        c = Candidates(c.boxes[top], c.scores[top], c.class_ids[top])
    xywh = np.concatenate((c.boxes[:, :2], c.boxes[:, 2:] - c.boxes[:, :2]), axis=1)
    # OpenCV's top_k caps the *candidates* before suppression, not the result: leave it off (0) and keep
    # the best max_det survivors (indices come back sorted by score).
    keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), c.scores.tolist(), c.class_ids.tolist(), 0.0, float(iou))
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)[:max_det]
    return Candidates(c.boxes[keep], c.scores[keep], c.class_ids[keep])
