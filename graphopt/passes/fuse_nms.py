"""`fuse-nms`: NMS inside the graph, with end-to-end outputs (YOLOv7 naming).

Appends to a decoded YOLO head — YOLOv5 `[1, N, 5+nc]` (score = objectness × class) or
anchor-free `[1, 4+nc, N]` — box conversion xywh → xyxy, confidence filtering, the standard
ONNX NonMaxSuppression (class-aware), and a top-K gather:

    num_dets [1, 1] int64 · det_boxes [1, K, 4] xyxy (input pixels) · det_scores [1, K] · det_classes [1, K] int64

Rows past num_dets are zero. By default each box keeps its best class only, as the runtime's host
NMS does; `multi_label=true` lets a box survive for every class above the threshold (as
validators do). Checked against the runtime's own decode + NMS on the same inputs: "lossless with
respect to host NMS".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from graphopt.core.compare import Comparison
from graphopt.core.errors import GraphoptError
from graphopt.core.graph import Names
from graphopt.passes.options import Options, option
from graphopt.passes.registry import PassContext, PassResult, register
from runtime import metadata as keys
from runtime.decode import END2END_NAMES, decode, head_arrays, infer_head_format, xywh_to_xyxy
from runtime.metadata import parse_metadata
from runtime.nms import nms


@dataclass(frozen=True)
class FuseNmsOptions(Options):
    # K sizes the padded outputs [1, K, 4] and NMS's own buffers: 100000 is far above any anchor count
    max_det: int = option(100, "K: detections kept per image (outputs are padded to K)", lo=1, hi=100_000)
    iou: float = option(0.45, "NMS IoU threshold", lo=0, hi=1, lo_open=True)
    conf: float = option(0.25, "confidence threshold", lo=0, hi=1, hi_open=True)
    multi_label: bool = option(False, "a box survives for every class above conf (validators), not only its best")
    output: str | None = option(None, "the head output to append NMS to (default: the main output)")


class _Builder:
    """One call per ONNX node; every tensor and node name fresh (graph.Names)."""

    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self.names = Names(graph)

    def const(self, value: Any, dtype: Any = np.int64) -> gs.Constant:
        return gs.Constant(self.names("nms_const"), np.asarray(value, dtype=dtype))

    def op(
        self,
        op: str,
        inputs: list[gs.Tensor],
        dtype: Any = np.float32,
        attrs: dict | None = None,
        outputs: int = 1,
    ) -> Any:
        outs = [gs.Variable(self.names(f"nms_{op.lower()}"), dtype=dtype) for _ in range(outputs)]
        self.graph.nodes.append(gs.Node(op, self.names(f"nms/{op}"), attrs or {}, inputs, outs))
        return outs[0] if outputs == 1 else outs


def _head_output(graph: gs.Graph, meta: Any, wanted: str) -> gs.Tensor:
    names = [o.name for o in graph.outputs]
    if set(END2END_NAMES) <= set(names):
        raise GraphoptError("fuse-nms: the model already has end-to-end NMS outputs")
    name = wanted or meta.main_output or names[0]
    if name not in names:
        raise GraphoptError(f"fuse-nms: no output named '{name}' (outputs: {', '.join(names)})")
    return next(o for o in graph.outputs if o.name == name)


def _layout(out: gs.Tensor, meta: Any) -> tuple[str, int]:
    shape = out.shape
    if not shape or len(shape) != 3 or not all(isinstance(d, int) for d in shape):
        raise GraphoptError(
            f"fuse-nms: output '{out.name}' has shape {shape}; expected a static decoded YOLO head "
            "[1, N, 5+nc] or [1, 4+nc, N] (run simplify first for shapes)"
        )
    nc = len(meta.names) or None
    head = meta.head if meta.head in ("yolov5", "anchor-free") else None
    try:
        head = head or infer_head_format({out.name: tuple(shape)}, nc)
    except ValueError as exc:
        raise GraphoptError(f"fuse-nms: {exc}") from exc
    classes = shape[2] - 5 if head == "yolov5" else shape[1] - 4
    if classes < 1:
        raise GraphoptError(f"fuse-nms: output shape {shape} leaves no class scores for a {head} head")
    return head, classes


def fuse_nms(graph: gs.Graph, ctx: PassContext) -> PassResult:
    """Append decode + confidence filter + ONNX NonMaxSuppression with end-to-end outputs."""
    opts = ctx.options
    meta = parse_metadata(ctx.metadata)
    out = _head_output(graph, meta, opts.output)
    head, nc = _layout(out, meta)
    b = _Builder(graph)
    pred = out if head == "yolov5" else b.op("Transpose", [out], attrs={"perm": [0, 2, 1]})  # → [1, N, 4+nc]
    pred = _candidates(b, graph, pred, head, nc, opts.conf)  # [1, M, …]: rows that can pass the threshold
    xy = b.op("Slice", [pred, b.const([0]), b.const([2]), b.const([2])])
    wh = b.op("Slice", [pred, b.const([2]), b.const([4]), b.const([2])])
    half = b.op("Div", [wh, b.const(2.0, np.float32)])
    boxes = b.op("Concat", [b.op("Sub", [xy, half]), b.op("Add", [xy, half])], attrs={"axis": 2})  # [1, N, 4]
    if head == "yolov5":
        obj = b.op("Slice", [pred, b.const([4]), b.const([5]), b.const([2])])
        cls = b.op("Slice", [pred, b.const([5]), b.const([5 + nc]), b.const([2])])
        scores = b.op("Mul", [cls, obj])
    else:
        scores = b.op("Slice", [pred, b.const([4]), b.const([4 + nc]), b.const([2])])  # [1, N, nc]
    if not opts.multi_label:
        # keep each box's best class only: zero the others (NMS then filters them by the threshold)
        best = b.op("ArgMax", [scores], dtype=np.int64, attrs={"axis": 2, "keepdims": 1})
        onehot = b.op("Equal", [b.const(np.arange(nc)), best], dtype=np.bool_)
        scores = b.op("Mul", [scores, b.op("Cast", [onehot], attrs={"to": 1})])
    per_class = b.op("Transpose", [scores], attrs={"perm": [0, 2, 1]})  # [1, nc, N]
    selected = b.op(
        "NonMaxSuppression",
        [
            boxes,
            per_class,
            b.const([opts.max_det]),
            b.const([opts.iou], np.float32),
            b.const([opts.conf], np.float32),
        ],
        dtype=np.int64,
        attrs={"center_point_box": 0},
    )  # [M, 3]: batch, class, box
    box_idx = b.op("Gather", [selected, b.const(2)], dtype=np.int64, attrs={"axis": 1})
    cls_idx = b.op("Gather", [selected, b.const(1)], dtype=np.int64, attrs={"axis": 1})
    nd_index = b.op("Gather", [selected, b.const([0, 2, 1])], dtype=np.int64, attrs={"axis": 1})
    sel_scores = b.op("GatherND", [scores, nd_index])  # [M]
    count = b.op("Shape", [sel_scores], dtype=np.int64)
    k = b.op("Min", [count, b.const([opts.max_det])], dtype=np.int64)
    top_scores, order = b.op("TopK", [sel_scores, k], attrs={"axis": 0, "largest": 1, "sorted": 1}, outputs=2)
    order.dtype = np.int64
    flat_boxes = b.op("Squeeze", [boxes, b.const([0])])  # [N, 4]
    top_boxes = b.op(
        "Gather", [flat_boxes, b.op("Gather", [box_idx, order], dtype=np.int64)], attrs={"axis": 0}
    )
    top_classes = b.op("Gather", [cls_idx, order], dtype=np.int64, attrs={"axis": 0})
    pad = b.op("Sub", [b.const([opts.max_det]), k], dtype=np.int64)
    zero = b.const([0])
    det_boxes = b.op(
        "Pad", [top_boxes, b.op("Concat", [zero, zero, pad, zero], dtype=np.int64, attrs={"axis": 0})]
    )
    det_scores = b.op("Pad", [top_scores, b.op("Concat", [zero, pad], dtype=np.int64, attrs={"axis": 0})])
    det_classes = b.op(
        "Pad", [top_classes, b.op("Concat", [zero, pad], dtype=np.int64, attrs={"axis": 0})], dtype=np.int64
    )
    outputs = [
        _named(b, "Reshape", [k, b.const([1, 1])], "num_dets", np.int64, [1, 1]),
        _named(b, "Unsqueeze", [det_boxes, b.const([0])], "det_boxes", np.float32, [1, opts.max_det, 4]),
        _named(b, "Unsqueeze", [det_scores, b.const([0])], "det_scores", np.float32, [1, opts.max_det]),
        _named(b, "Unsqueeze", [det_classes, b.const([0])], "det_classes", np.int64, [1, opts.max_det]),
    ]
    removed = [o.name for o in graph.outputs]
    graph.outputs = outputs
    settings = {k_: getattr(opts, k_) for k_ in ("max_det", "iou", "conf", "multi_label")}
    return PassResult(
        changed=True,
        notes=[
            f"NMS appended to '{out.name}' ({head} head, {nc} classes): "
            + ", ".join(f"{k_}={v}" for k_, v in settings.items())
        ],
        details={"source_output": out.name, "head": head, "classes": nc, **settings},
        metadata={keys.HEAD: "end2end", keys.PREFIX + "nms": settings, keys.PREFIX + "nms_source_head": head},
        removed_outputs=removed,
    )


def _candidates(b: _Builder, graph: gs.Graph, pred: gs.Tensor, head: str, nc: int, conf: float) -> gs.Tensor:
    """Rows whose best possible score passes `conf` (objectness bounds YOLOv5's scores), so that the
    per-class work and NMS run on tens of rows instead of all anchors — as the host decode does."""
    if head == "yolov5":
        key = b.op("Slice", [pred, b.const([4]), b.const([5]), b.const([2])])  # [1, N, 1]
        key = b.op("Reshape", [key, b.const([-1])])
    else:
        cls = b.op("Slice", [pred, b.const([4]), b.const([4 + nc]), b.const([2])])
        if graph.opset >= 18:
            key = b.op("ReduceMax", [cls, b.const([0, 2])], attrs={"keepdims": 0})
        else:
            key = b.op("ReduceMax", [cls], attrs={"axes": [0, 2], "keepdims": 0})
    keep = b.op("Greater", [key, b.const(conf, np.float32)], dtype=np.bool_)
    rows = b.op("Reshape", [b.op("NonZero", [keep], dtype=np.int64), b.const([-1])], dtype=np.int64)
    return b.op("Gather", [pred, rows], attrs={"axis": 1})


def _named(
    b: _Builder, op: str, inputs: list[gs.Tensor], name: str, dtype: Any, shape: list[int]
) -> gs.Variable:
    out = gs.Variable(name, dtype=dtype, shape=shape)
    b.graph.nodes.append(gs.Node(op, b.names(f"nms/{name}"), {}, inputs, [out]))
    return out


# IoU within this of the threshold: suppressing or not is both NMS's answer (the boxes carry float noise,
# and onnxruntime computes IoU in float32 where OpenCV uses double).
TIE_IOU = 1e-3
MAX_PAIRS = 1 << 22  # IoU matrix cells computed at once (rows are taken in chunks)


def compare_with_host_nms(
    reference: list[dict[str, np.ndarray]],
    candidate: list[dict[str, np.ndarray]],
    metadata: dict[str, str],
    atol: float,
    rtol: float,
) -> Comparison:
    """The fused outputs against the runtime's decode + NMS on the reference outputs, same thresholds,
    modulo ties.

    Which of two equal-scored boxes NMS keeps, and which equal scores make the top-K cut, is arbitrary
    in both implementations (and a lossless pass before this one moves scores by float noise), so the
    fused detections are not compared with one host result: they must be *a* valid result of greedy NMS
    on the reference's candidates, where scores within the check's tolerance (atol + rtol·|score|) are
    ties and IoU within TIE_IOU of the threshold may go either way —
    every fused detection is a host candidate (same class, box and score within tolerance; a box's
    near-best class when multi_label is off); no two kept boxes of a class overlap above the threshold;
    and every candidate left out is suppressed by a kept box of its class scoring at least as high, or
    lies at or below the K-th score when K detections are kept. A detection the fused graph really
    drops, adds or moves fails."""
    import json

    settings = json.loads(metadata[keys.PREFIX + "nms"])
    head = metadata[keys.PREFIX + "nms_source_head"]
    meta = parse_metadata(metadata)
    worst, differ = 0.0, 0
    for i, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        name = meta.main_output if meta.main_output in ref else next(iter(ref))
        fused = decode(cand, "end2end", -1.0)
        problem, output, box_err = _valid_nms_result(ref[name], head, fused, settings, atol, rtol)
        if problem:
            inf = float("inf")
            return Comparison(False, inf, inf, output, list(END2END_NAMES), f"input {i + 1}: {problem}")
        worst = max(worst, box_err)
        host = nms(
            decode({name: ref[name]}, head, settings["conf"], settings["multi_label"]),
            settings["iou"],
            settings["max_det"],
        )
        differ += _count_differences(host, fused, atol, rtol)
    reason = f"equal to host NMS up to {differ} tie-broken detection(s)" if differ else "equal to host NMS"
    return Comparison(True, worst, 0.0, "det_boxes", list(END2END_NAMES), reason)


def _tol(value: Any, atol: float, rtol: float) -> Any:
    return atol + rtol * np.abs(value)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] IoU of xyxy boxes."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(w, 0) * np.maximum(h, 0)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _valid_nms_result(
    raw: np.ndarray, head: str, fused: Any, settings: dict[str, Any], atol: float, rtol: float
) -> tuple[str | None, str, float]:
    """(why `fused` is not a valid NMS result of `raw`'s candidates or None, the output at fault, the
    largest box difference of a matched detection)."""
    conf, thr, k_max, multi = settings["conf"], settings["iou"], settings["max_det"], settings["multi_label"]
    xywh, all_scores = head_arrays(raw, head)
    best_all = all_scores.max(1)
    live = np.nonzero(best_all > conf - _tol(conf, atol, rtol))[0]  # rows that can matter
    boxes = xywh_to_xyxy(xywh[live].astype(np.float64))
    scores = all_scores[live].astype(np.float64)
    best = best_all[live].astype(np.float64)
    nc = scores.shape[1]
    n = len(fused.scores)
    if n > k_max:
        return f"{n} fused detections, more than max_det={k_max}", "num_dets", 0.0
    rows = np.empty(n, np.int64)
    taken: set[tuple[int, int]] = set()
    worst = 0.0
    for j in range(n):
        c, s_f, b = int(fused.class_ids[j]), float(fused.scores[j]), fused.boxes[j].astype(np.float64)
        if not 0 <= c < nc:
            return f"fused detection {j} has class {c}, outside 0..{nc - 1}", "det_classes", 0.0
        diff = np.abs(boxes - b)
        ok = (diff <= _tol(b, atol, rtol)).all(1) & (np.abs(scores[:, c] - s_f) <= _tol(s_f, atol, rtol))
        if not multi:  # the graph keeps each box's best class: c must be a best class (ties allowed)
            ok &= best - scores[:, c] <= _tol(best, atol, rtol)
        options = [r for r in np.nonzero(ok)[0] if (int(r), c if multi else -1) not in taken]
        if not options:
            return (
                f"fused detection {j} (class {c}, score {s_f:.6g}, box {np.round(b, 2).tolist()}) is not a "
                "candidate of host decoding",
                "det_boxes",
                0.0,
            )
        r = min(options, key=lambda q: float(diff[q].max()))
        taken.add((int(r), c if multi else -1))
        rows[j] = r
        worst = max(worst, float(diff[r].max()))
    classes = fused.class_ids.astype(np.int64)
    kept_boxes = boxes[rows]
    kept_scores = scores[rows, classes] if n else np.zeros(0)
    for c in np.unique(classes):  # NMS never keeps two boxes of a class that overlap above the threshold
        idx = np.nonzero(classes == c)[0]
        overlap = _iou(kept_boxes[idx], kept_boxes[idx])
        np.fill_diagonal(overlap, 0.0)
        if (overlap > thr + TIE_IOU).any():
            a, b = np.unravel_index(int(overlap.argmax()), overlap.shape)
            return (
                f"fused detections {int(idx[a])} and {int(idx[b])} of class {int(c)} overlap with IoU "
                f"{overlap[a, b]:.3f} > iou={thr}: host NMS keeps only one",
                "det_boxes",
                worst,
            )
    # Every candidate left out must be suppressed by a kept box, or lie at the K-th score or below.
    cut = float(kept_scores.min()) if n == k_max and n else None
    floor = conf + _tol(conf, atol, rtol)  # within tolerance of conf: in or out, both are right
    if cut is not None:
        floor = max(floor, cut + _tol(cut, atol, rtol))
    if multi:
        required = scores > floor
        required[rows, classes] = False
    else:
        required = (best > floor)[:, None]
        required[rows, 0] = False
    todo = np.nonzero(required.any(1))[0]
    chunk = max(1, MAX_PAIRS // max(1, n, nc))
    for lo in range(0, len(todo), chunk):
        at = todo[lo : lo + chunk]
        sc = scores[at]
        over = _iou(boxes[at], kept_boxes) > thr - TIE_IOU  # [rows, kept]
        if multi:
            suppressed = np.zeros((len(at), nc), bool)
            for c in np.unique(classes):
                fs = classes == c
                beaten = kept_scores[fs][None, :] >= (sc[:, c] - _tol(sc[:, c], atol, rtol))[:, None]
                suppressed[:, c] = (over[:, fs] & beaten).any(1)
            left = required[at] & ~suppressed
        else:
            top = best[at]
            as_kept = sc[:, classes]  # each row's score in each kept box's class: [rows, kept]
            near_best = as_kept >= (top - _tol(top, atol, rtol))[:, None]
            beaten = kept_scores[None, :] >= as_kept - _tol(as_kept, atol, rtol)
            left = ~(over & near_best & beaten).any(1)[:, None]
        if left.any():
            hits = np.argwhere(left)
            hit_scores = sc[hits[:, 0], hits[:, 1]] if multi else best[at][hits[:, 0]]
            r, c = map(int, hits[int(hit_scores.argmax())])  # the best-scoring one is named
            row = int(at[r])
            cls = c if multi else int(scores[row].argmax())
            return (
                f"host NMS keeps a class-{cls} box (score {float(scores[row, cls]):.6g}, box "
                f"{np.round(boxes[row], 2).tolist()}) that the fused graph drops",
                "det_classes" if n else "num_dets",
                worst,
            )
    return None, "det_boxes", worst


def _count_differences(host: Any, fused: Any, atol: float, rtol: float) -> int:
    """Fused detections with no equal (class, box, score) host detection: the ties it broke otherwise."""
    unmatched = list(range(len(host.scores)))
    differ = 0
    for j in range(len(fused.scores)):
        hit = next(
            (
                i
                for i in unmatched
                if host.class_ids[i] == fused.class_ids[j]
                and (np.abs(host.boxes[i] - fused.boxes[j]) <= _tol(host.boxes[i], atol, rtol)).all()
                and abs(host.scores[i] - fused.scores[j]) <= _tol(host.scores[i], atol, rtol)
            ),
            None,
        )
        if hit is None:
            differ += 1
        else:
            unmatched.remove(hit)
    return differ


register(
    "fuse-nms",
    lossless=True,
    options=FuseNmsOptions,
    requires=("static_output_shapes",),
    compare=compare_with_host_nms,
)(fuse_nms)
