"""MACs where ONNX's shape inference loses a shape: a Slice whose bounds are computed from Shape."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from graphopt.core.macs import macs_summary


def _chunked_conv_model() -> onnx.ModelProto:
    """x (1,8,16,16) → Slice of the first half of the channels, its end = Shape(x)[1] / 2 (computed, as
    Ultralytics' chunk exports do) → Conv 4→6, 3x3, pads 1: 16·16·6 outputs × 4·3·3 MACs."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["c"], axis=0),
        helper.make_node("Div", ["c", "two"], ["half"]),
        helper.make_node("Slice", ["x", "zero", "half", "one"], ["xs"]),
        helper.make_node("Conv", ["xs", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("two", TensorProto.INT64, [1], [2]),
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        onnx.numpy_helper.from_array(np.zeros((6, 4, 3, 3), np.float32), "w"),
    ]
    graph = helper.make_graph(
        nodes, "chunk", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_conv_after_a_computed_slice_counts_its_macs() -> None:
    model = _chunked_conv_model()
    onnx.checker.check_model(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    lost = {vi.name: vi for vi in inferred.graph.value_info}.get("y")
    assert lost is None or any(not d.HasField("dim_value") for d in lost.type.tensor_type.shape.dim)  # the case
    assert macs_summary(model)["macs"] == 16 * 16 * 6 * 4 * 3 * 3


def test_prune_geometry_sees_the_same_conv_shapes_as_the_macs() -> None:
    """prune's MACs allocation reads its conv geometry from the same shapes (not ONNX's alone)."""
    from graphopt.prune.alloc import geometry

    model = _chunked_conv_model()
    model.graph.node[-1].name = "conv"
    geo, other = geometry(model)
    g = geo["conv"]
    assert (g.hw, g.kernel, g.cout, g.cin) == (16 * 16, 9, 6, 4) and other == 0
