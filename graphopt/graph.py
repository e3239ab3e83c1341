"""Graph queries and conversions shared by passes (one place, so passes stay small)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    return gs.import_onnx(model)


def to_model(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export `graph` keeping the IR version and metadata of `like` (graphsurgeon drops metadata)."""
    model = gs.export_onnx(graph, do_type_check=False)
    if like.ir_version:
        model.ir_version = like.ir_version
    del model.metadata_props[:]
    model.metadata_props.extend(like.metadata_props)
    return model


def tidy(graph: gs.Graph) -> gs.Graph:
    """Remove dead nodes and tensors, then order nodes topologically (after every surgery)."""
    return graph.cleanup().toposort()


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: gs.Tensor) -> list[gs.Node]:
    return list(tensor.outputs)


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of an initializer or a Constant node's output, else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        value = node.attrs["value"]
        return np.asarray(value.values) if isinstance(value, gs.Constant) else None
    return None


def nodes_of(graph: gs.Graph, op: str) -> list[gs.Node]:
    return [n for n in graph.nodes if n.op == op]


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference when it succeeds; custom ops can defeat it, and shapes are optional."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - onnx raises several types here
        return model
