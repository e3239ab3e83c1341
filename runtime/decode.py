"""YOLO output decoding, vectorized: every head format to (boxes xyxy, scores, class ids) in input pixels.

Formats (see runtime.metadata.HEAD_FORMATS):
- "yolov5":      [1, N, 5 + nc]  xywh, objectness, class probabilities (score = obj * cls)
- "anchor-free": [1, 4 + nc, N]  xywh, class scores (Ultralytics v8/v9/11, YOLOv9 GELAN)
- "end2end":     num_dets [1,1], det_boxes [1,K,4] xyxy, det_scores [1,K], det_classes [1,K]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

END2END_NAMES = ("num_dets", "det_boxes", "det_scores", "det_classes")


@dataclass
class Candidates:
    """Boxes before NMS (or final detections for end-to-end models), in network-input pixels."""

    boxes: np.ndarray  # [M, 4] xyxy float32
    scores: np.ndarray  # [M] float32
    class_ids: np.ndarray  # [M] int64
    final: bool = False  # True when NMS already ran inside the graph


def infer_head_format(shapes: dict[str, tuple[int, ...]], nc: int | None = None) -> str:
    """Guess the head format from output shapes when metadata does not say it."""
    if all(n in shapes for n in END2END_NAMES):
        return "end2end"
    shape = next(iter(shapes.values()))
    if len(shape) != 3:
        raise ValueError(f"cannot interpret output of shape {shape}: expected [1, N, 5+nc] or [1, 4+nc, N]")
    _, a, b = shape
    if nc is not None:
        if b == nc + 5:
            return "yolov5"
        if a == nc + 4:
            return "anchor-free"
    # without class names: the long axis is the box axis
    return "yolov5" if a > b else "anchor-free"


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    xy, wh = xywh[:, :2], xywh[:, 2:4] / 2
    return np.concatenate((xy - wh, xy + wh), axis=1)


def _select(boxes: np.ndarray, scores: np.ndarray, conf: float, multi_label: bool) -> Candidates:
    """Boxes whose class score passes `conf`: best class per box, or every passing class (eval)."""
    if multi_label:
        i, j = np.nonzero(scores > conf)
        return Candidates(xywh_to_xyxy(boxes[i]), scores[i, j].astype(np.float32), j.astype(np.int64))
    cls = scores.argmax(1)
    best = scores[np.arange(len(scores)), cls]
    keep = best > conf
    return Candidates(xywh_to_xyxy(boxes[keep]), best[keep].astype(np.float32), cls[keep].astype(np.int64))


def head_arrays(output: np.ndarray, head: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw head output → (xywh boxes [N, 4], class scores [N, nc]) for the decoded formats."""
    pred = np.asarray(output)
    pred = pred.reshape(pred.shape[-2:]) if pred.ndim == 3 else pred
    if head == "yolov5":
        return pred[:, :4], pred[:, 5:] * pred[:, 4:5]
    if head == "anchor-free":
        return pred[:4].T, pred[4:].T
    raise ValueError(f"head format '{head}' has no raw box/score arrays")


def decode(
    outputs: dict[str, np.ndarray],
    head: str,
    conf: float,
    multi_label: bool = False,
    output_name: str | None = None,
) -> Candidates:
    if head == "end2end":
        n = int(np.asarray(outputs["num_dets"]).reshape(-1)[0])
        boxes = np.asarray(outputs["det_boxes"]).reshape(-1, 4)[:n].astype(np.float32)
        scores = np.asarray(outputs["det_scores"]).reshape(-1)[:n].astype(np.float32)
        classes = np.asarray(outputs["det_classes"]).reshape(-1)[:n].astype(np.int64)
        keep = scores > conf
        return Candidates(boxes[keep], scores[keep], classes[keep], final=True)
    pred = np.asarray(outputs[output_name] if output_name else next(iter(outputs.values())))
    pred = pred.reshape(pred.shape[-2:]) if pred.ndim == 3 else pred
    if head == "yolov5":  # [N, 5 + nc]
        obj = pred[:, 4:5]
        live = obj[:, 0] > conf  # objectness bounds every class score: a cheap first cut
        pred = pred[live]
        return _select(pred[:, :4], pred[:, 5:] * pred[:, 4:5], conf, multi_label)
    if head == "anchor-free":  # [4 + nc, N]
        pred = pred.T
        live = pred[:, 4:].max(1) > conf
        pred = pred[live]
        return _select(pred[:, :4], pred[:, 4:], conf, multi_label)
    raise ValueError(f"unknown head format '{head}'")
