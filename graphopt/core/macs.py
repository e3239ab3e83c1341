"""Multiply-accumulates of an ONNX model, per node and per op type (from inferred shapes)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx

from graphopt.core.graph import infer_shapes

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _known(shape: list[int] | None) -> bool:
    return shape is not None and len(shape) > 0 and 0 not in shape


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every tensor's shape (0 for an unknown dimension): ONNX's inference, completed by
    onnxruntime's symbolic inference where a compute op's output shape is unknown."""
    shapes = _inferred(infer_shapes(model))
    if all(_known(shapes.get(n.output[0])) for n in model.graph.node if n.op_type in COMPUTE_OPS):
        return shapes
    # ONNX's inference loses shapes after a Slice whose bounds are computed from Shape (Ultralytics'
    # exports of YOLOv9/v11 chunk tensors that way: 188 of yolov9t's 192 convs had no shape, so its MACs
    # read 0.19 G instead of 3.2 G); onnxruntime's symbolic inference propagates those values.
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        symbolic = _inferred(SymbolicShapeInference.infer_shapes(model, auto_merge=True))
    except Exception:  # noqa: BLE001 - absent onnxruntime, or an op it cannot infer: keep ONNX's shapes
        return shapes
    merged = dict(shapes)
    merged.update({k: v for k, v in symbolic.items() if _known(v) and not _known(shapes.get(k))})
    return merged


def _inferred(inferred: onnx.ModelProto) -> dict[str, list[int]]:
    g = inferred.graph
    shapes = {}
    for vi in (*g.input, *g.output, *g.value_info):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
            shapes[vi.name] = dims
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def node_macs(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """{node name: (op type, MACs)} for the compute-bound ops (Conv, ConvTranspose, MatMul, Gemm);
    0 where a shape is unknown."""
    shapes = tensor_shapes(model)
    out: dict[str, tuple[str, int]] = {}
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(node.input[1])
            y = shapes.get(node.output[0])
            if not w or not y or 0 in y:
                out[name] = (node.op_type, 0)
                continue
            if node.op_type == "Conv":  # each output element: Cin/groups · kh · kw MACs
                out[name] = (
                    node.op_type,
                    int(np.prod(y, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64)),
                )
            else:
                x = shapes.get(node.input[0]) or [0]
                out[name] = (
                    node.op_type,
                    int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64)),
                )
        elif node.op_type in ("MatMul", "Gemm"):
            a, y = shapes.get(node.input[0]), shapes.get(node.output[0])
            if not a or not y or 0 in y or 0 in a:
                out[name] = (node.op_type, 0)
                continue
            k = a[-1] if node.op_type == "MatMul" or not _attr(node, "transA") else a[-2]
            out[name] = (node.op_type, int(np.prod(y, dtype=np.int64)) * int(k))
    return out


def _attr(node: onnx.NodeProto, name: str) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), 0)


def macs_summary(model: onnx.ModelProto) -> dict[str, object]:
    """`macs` (total) and `macs_by_op` — what inspect/diff report."""
    per = node_macs(model)
    by_op: Counter[str] = Counter()
    for op, m in per.values():
        by_op[op] += m
    return {"macs": int(sum(by_op.values())), "macs_by_op": dict(sorted(by_op.items()))}
