"""COCO-style mAP of any model the runtime can run, on a YOLO data.yaml split (pycocotools).

Detections use the validation settings of YOLOv5/Ultralytics (conf 0.001, IoU 0.6, up to 300
boxes, multi-label) so numbers compare with theirs. Precision and recall are class means at the
confidence that maximizes mean F1 at IoU 0.5, as YOLOv5 reports them.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from graphopt.core.errors import GraphoptError
from graphopt.data.datasets import Dataset, load_dataset

if TYPE_CHECKING:
    from runtime.backends import Backend

EVAL_CONF, EVAL_IOU, EVAL_MAX_DET = 0.001, 0.6, 300


@dataclass
class EvalResult:
    map50: float
    map50_95: float
    precision: float
    recall: float
    images: int
    instances: int
    skipped_images: int
    skipped_labels: int
    problems: list[str]
    seconds: float
    settings: dict[str, Any]
    per_class: list[dict[str, Any]] = field(default_factory=list)  # name, instances, ap50, ap50_95
    pr_curve: dict[str, list[float]] = field(default_factory=dict)  # IoU 0.5, mean over classes
    timing_ms: dict[str, float] = field(default_factory=dict)  # mean per image: pre, infer, post
    plots: list[str] | None = None  # files `eval --plots` wrote

    def as_dict(self) -> dict[str, Any]:
        extra = {} if self.plots is None else {"plots": self.plots}
        return {
            "map50": self.map50,
            "map50_95": self.map50_95,
            "precision": self.precision,
            "recall": self.recall,
            "images": self.images,
            "instances": self.instances,
            "skipped_images": self.skipped_images,
            "skipped_labels": self.skipped_labels,
            "problems": self.problems,
            "seconds": round(self.seconds, 2),
            "timing_ms": {k: round(v, 2) for k, v in self.timing_ms.items()},
            "per_class": self.per_class,
            **self.settings,
        } | extra


def _coco_gt(ds: Dataset, sizes: dict[int, tuple[int, int]]) -> dict[str, Any]:
    images, annotations = [], []
    for image_id, item in enumerate(ds.items):
        if image_id not in sizes:
            continue
        h, w = sizes[image_id]
        images.append({"id": image_id, "file_name": item.path.name, "width": w, "height": h})
        for cls, cx, cy, bw, bh in item.labels:
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n} for i, n in ds.names.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def evaluate(
    model: str | Path,
    data: str | Path,
    *,
    backend: str | Backend | None = None,  # a name, or an object with the runtime's Backend protocol
    imgsz: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    split: str = "val",  # the data.yaml split judged; a fit (quantize's budget loop) uses "train"
) -> EvalResult:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise GraphoptError("graphopt eval needs pycocotools: pip install 'graphopt[eval]'") from exc
    from tqdm import tqdm

    from runtime.detector import open_detector
    from runtime.sources import ImageProblem, load_image

    ds = load_dataset(data, split)
    detector = open_detector(
        model,
        backend=backend,
        threads=threads,
        conf=EVAL_CONF,
        iou=EVAL_IOU,
        max_det=EVAL_MAX_DET,
        multi_label=True,
        imgsz=imgsz,
    )
    problems = list(ds.problems)
    settings = {"conf": EVAL_CONF, "iou": EVAL_IOU, "max_det": EVAL_MAX_DET}
    if detector.head == "end2end":
        settings, note = _graph_nms_settings(detector.backend.metadata)
        problems.append(note)
    model_nc = len(detector.names)
    if model_nc and model_nc != ds.nc:
        problems.append(
            f"the model has {model_nc} classes, the dataset {ds.nc}: class ids are compared as they are"
        )
    start = time.perf_counter()
    sizes: dict[int, tuple[int, int]] = {}
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    timings: list[dict[str, float]] = []
    for image_id, item in enumerate(tqdm(ds.items, desc="eval", unit="img", disable=not progress or None)):
        try:
            frame = load_image(item.path)
        except ImageProblem as exc:  # unreadable, or above the megapixel limit: skipped and counted
            skipped.append(f"{item.path.name} ({exc.reason})")
            continue
        sizes[image_id] = frame.shape[:2]
        det = detector(frame)
        if det.timings_ms:
            timings.append(det.timings_ms)
        for (x1, y1, x2, y2), score, cls in zip(det.boxes, det.scores, det.class_ids, strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "score": float(score),
                }
            )
    if not sizes:
        first = f" ({skipped[0]})" if skipped else ""
        raise GraphoptError(f"{data}: none of the {len(ds.items)} images could be read{first}")
    if skipped:
        problems.append(f"skipped {len(skipped)} unreadable image(s): {'; '.join(skipped[:3])}")
    gt = COCO()
    gt.dataset = _coco_gt(ds, sizes)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        map50_95 = map50 = precision = recall = 0.0
        per_class: list[dict[str, Any]] = []
        pr_curve: dict[str, list[float]] = {}
        if results:
            dt = gt.loadRes(results)
            ev = COCOeval(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            map50_95, map50 = float(ev.stats[0]), float(ev.stats[1])
            precision, recall = _precision_recall(ev)
            per_class, pr_curve = _per_class(ev, ds, sizes)
    instances = sum(len(ds.items[i].labels) for i in sizes)
    return EvalResult(
        map50=map50,
        map50_95=map50_95,
        precision=precision,
        recall=recall,
        images=len(sizes),
        instances=instances,
        skipped_images=len(skipped) + len(ds.unusable),
        skipped_labels=ds.skipped_labels,
        problems=problems,
        seconds=time.perf_counter() - start,
        per_class=per_class,
        pr_curve=pr_curve,
        timing_ms={k: float(np.mean([t[k] for t in timings])) for k in ("pre", "infer", "post")}
        if timings
        else {},
        settings={
            "model": str(model),
            "data": str(data),
            "backend": detector.backend.name,
            "imgsz": list(detector.input_hw),
            "preprocess": detector.preprocess_mode,
            **settings,
        },
    )


def _graph_nms_settings(metadata: dict[str, str]) -> tuple[dict[str, Any], str]:
    """The thresholds baked into a fuse-nms graph (they, not the validator's, decide what is scored)."""
    import json

    try:
        nms = json.loads(metadata.get("graphopt.nms", "{}"))
    except ValueError:
        nms = {}
    nms = nms if isinstance(nms, dict) else {}
    settings = {
        "conf": nms.get("conf"),
        "iou": nms.get("iou"),
        "max_det": nms.get("max_det"),
        "multi_label": nms.get("multi_label"),
        "nms_in_graph": True,
    }
    known = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "nms_in_graph" and v is not None)
    note = (
        f"NMS is inside this model's graph ({known or 'thresholds not recorded'}); those thresholds, not the "
        f"validator's (conf {EVAL_CONF}, iou {EVAL_IOU}, {EVAL_MAX_DET} boxes, multi-label), decide what is "
        "scored, so this mAP is capped below the model's own: evaluate the model from before fuse-nms for a "
        "number comparable with val.py"
    )
    return settings, note


def _per_class(ev: Any, ds: Dataset, sizes: dict[int, tuple[int, int]]) -> tuple[list[dict[str, Any]], dict]:
    """Per class with labels: AP50 and AP50-95 (COCOeval's accumulated precision, all areas, 100 boxes…
    its last maxDets), and the mean precision-recall curve at IoU 0.5."""
    prec = ev.eval["precision"]  # [iou thresholds, recall points, classes, areas, max dets]
    counts: dict[int, int] = {}
    for i in sizes:
        for cls in ds.items[i].labels[:, 0].astype(int):
            counts[int(cls)] = counts.get(int(cls), 0) + 1
    rows, curves = [], []
    for k, cat in enumerate(ev.params.catIds):
        if not counts.get(cat):
            continue
        p = prec[:, :, k, 0, -1]
        valid = p > -1
        ap50_95 = float(p[valid].mean()) if valid.any() else 0.0
        p50 = p[0]
        ap50 = float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0
        rows.append(
            {
                "class": ds.names.get(cat, str(cat)),
                "id": cat,
                "instances": counts[cat],
                "ap50": ap50,
                "ap50_95": ap50_95,
            }
        )
        curves.append(np.where(p50 > -1, p50, 0.0))
    curve = {"recall": [float(r) for r in ev.params.recThrs]}
    curve["precision"] = [float(v) for v in np.mean(curves, axis=0)] if curves else []
    return rows, curve


def _precision_recall(ev: Any) -> tuple[float, float]:
    """Mean P and R over classes at the confidence of maximum mean F1 (IoU 0.5), from COCOeval's matches."""
    p = ev.params
    all_area, max_det = p.areaRng[0], p.maxDets[-1]
    scores: dict[int, list[np.ndarray]] = {}
    hits: dict[int, list[np.ndarray]] = {}
    npos: dict[int, int] = {}
    for e in ev.evalImgs:
        if e is None or e["aRng"] != all_area or e["maxDet"] != max_det:
            continue
        cat = e["category_id"]
        npos[cat] = npos.get(cat, 0) + int(np.sum(np.asarray(e["gtIgnore"]) == 0))
        keep = ~np.asarray(e["dtIgnore"][0], dtype=bool)
        scores.setdefault(cat, []).append(np.asarray(e["dtScores"])[keep])
        hits.setdefault(cat, []).append(np.asarray(e["dtMatches"][0])[keep] > 0)
    grid = np.linspace(0, 1, 1000)
    ps, rs = [], []
    for cat, n in npos.items():
        if n == 0:
            continue
        s = np.concatenate(scores.get(cat, [np.zeros(0)]))
        h = np.concatenate(hits.get(cat, [np.zeros(0, bool)]))
        order = np.argsort(-s)
        s, h = s[order], h[order]
        tp = np.cumsum(h)
        fp = np.cumsum(~h)
        recall = tp / n if len(s) else np.zeros(0)
        prec = tp / np.maximum(tp + fp, 1) if len(s) else np.zeros(0)
        rs.append(np.interp(-grid, -s, recall, left=0) if len(s) else np.zeros_like(grid))
        ps.append(np.interp(-grid, -s, prec, left=1) if len(s) else np.zeros_like(grid))
    if not ps:
        return 0.0, 0.0
    pm, rm = np.mean(ps, 0), np.mean(rs, 0)
    f1 = 2 * pm * rm / np.maximum(pm + rm, 1e-16)
    i = int(np.convolve(f1, np.ones(11) / 11, mode="same").argmax())  # smoothed, as YOLOv5
    return float(np.mean([x[i] for x in ps])), float(np.mean([x[i] for x in rs]))
