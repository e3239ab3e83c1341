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
from graphopt.passes.options import OptionError, Options, option
from graphopt.passes.registry import PassContext, PassResult, register
from runtime import metadata as keys
from runtime.decode import END2END_NAMES, decode, infer_head_format
from runtime.metadata import parse_metadata
from runtime.nms import nms


@dataclass(frozen=True)
class FuseNmsOptions(Options):
    max_det: int = option(100, "K: detections kept per image (outputs are padded to K)")
    iou: float = option(0.45, "NMS IoU threshold")
    conf: float = option(0.25, "confidence threshold")
    multi_label: bool = option(False, "a box survives for every class above conf (validators), not only its best")
    output: str | None = option(None, "the head output to append NMS to (default: the main output)")

    def check(self) -> None:
        if self.max_det < 1 or not 0 < self.iou <= 1 or not 0 <= self.conf < 1:
            raise OptionError("max_det ≥ 1, 0 < iou ≤ 1 and 0 ≤ conf < 1")


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


def compare_with_host_nms(
    reference: list[dict[str, np.ndarray]],
    candidate: list[dict[str, np.ndarray]],
    metadata: dict[str, str],
    atol: float,
    rtol: float,
) -> Comparison:
    """The fused outputs against the runtime's decode + NMS on the reference outputs, same thresholds."""
    import json

    settings = json.loads(metadata[keys.PREFIX + "nms"])
    head = metadata[keys.PREFIX + "nms_source_head"]
    meta = parse_metadata(metadata)
    max_abs, worst = 0.0, None
    for ref, cand in zip(reference, candidate, strict=True):
        name = meta.main_output if meta.main_output in ref else next(iter(ref))
        host = nms(
            decode({name: ref[name]}, head, settings["conf"], settings["multi_label"]),
            settings["iou"],
            settings["max_det"],
        )
        fused = decode(cand, "end2end", -1.0)
        if len(fused.scores) != len(host.scores):
            return Comparison(
                False,
                float("inf"),
                float("inf"),
                "num_dets",
                list(END2END_NAMES),
                f"{len(fused.scores)} fused detections vs {len(host.scores)} from host NMS",
            )
        if len(host.scores) == 0:
            continue
        order_h, order_f = (
            np.lexsort((host.class_ids, -host.scores)),
            np.lexsort((fused.class_ids, -fused.scores)),
        )
        if not np.array_equal(host.class_ids[order_h], fused.class_ids[order_f]):
            return Comparison(
                False,
                float("inf"),
                float("inf"),
                "det_classes",
                list(END2END_NAMES),
                "classes differ from host NMS",
            )
        d_box = float(np.abs(host.boxes[order_h] - fused.boxes[order_f]).max())
        d_score = float(np.abs(host.scores[order_h] - fused.scores[order_f]).max())
        if d_box > max_abs:
            max_abs, worst = d_box, "det_boxes"
        if d_box > 1e-3 or d_score > 1e-5:
            return Comparison(
                False,
                max(d_box, d_score),
                0.0,
                "det_boxes" if d_box > 1e-3 else "det_scores",
                list(END2END_NAMES),
                f"box diff {d_box:.3g} px, score diff {d_score:.3g}",
            )
    return Comparison(True, max_abs, 0.0, worst, list(END2END_NAMES))


register(
    "fuse-nms",
    lossless=True,
    options=FuseNmsOptions,
    requires=("static_output_shapes",),
    compare=compare_with_host_nms,
)(fuse_nms)
