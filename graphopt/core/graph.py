"""Graph queries and conversions shared by passes (one place, so passes stay small)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphopt.core.convmath import ConvKernel, bn_scale_shift


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


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of an initializer or a Constant node's output, else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        value = node.attrs["value"]
        return np.asarray(value.values) if isinstance(value, gs.Constant) else None
    return None


def ancestor_nodes(tensor: gs.Tensor) -> list[gs.Node]:
    """Every node `tensor` depends on."""
    seen: dict[int, gs.Node] = {}
    stack = list(tensor.inputs)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        for t in node.inputs:
            stack.extend(t.inputs)
    return list(seen.values())


def nodes_of(graph: gs.Graph, op: str) -> list[gs.Node]:
    return [n for n in graph.nodes if n.op == op]


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference when it succeeds; custom ops can defeat it, and shapes are optional."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - onnx raises several types here
        return model


def infer_shapes_serialized(model: onnx.ModelProto) -> bytes:
    """`infer_shapes` as the serialized model: for a caller that checks it and loads it into onnxruntime
    as well, each of which would serialize it again (about 0.2 s each on a 200 MB model)."""
    try:  # the C++ entry point onnx.shape_inference.infer_shapes wraps: it returns bytes, not a model
        from onnx.onnx_cpp2py_export import shape_inference as c_shape_inference
    except ImportError:  # a future onnx that moves it: the public API, one more serialization
        return infer_shapes(model).SerializeToString()
    serialized = model.SerializeToString()
    try:
        return c_shape_inference.infer_shapes(serialized, False, False, False)
    except Exception:  # noqa: BLE001 - onnx raises several types here
        return serialized


class Names:
    """Fresh names for one pass, tensors and nodes alike: the one naming helper (graphsurgeon needs unique
    tensor names, and onnxruntime's quantizer addresses nodes by name; collisions corrupt a model)."""

    def __init__(self, graph: gs.Graph | onnx.ModelProto) -> None:
        if isinstance(graph, onnx.ModelProto):
            g = graph.graph
            self.used = {n.name for n in g.node} | {t for n in g.node for t in (*n.input, *n.output)}
            self.used |= {t.name for t in g.initializer} | {v.name for v in (*g.input, *g.output)}
        else:
            self.used = set(graph.tensors().keys()) | {n.name for n in graph.nodes}

    def __call__(self, base: str) -> str:
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name


def name_unnamed_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a fresh name `Op_i` (onnxruntime's quantizer addresses nodes by name)."""
    names = Names(model)
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = names(f"{node.op_type}_{i}")


def single_consumer(tensor: gs.Tensor, graph: gs.Graph) -> bool:
    """Only one node reads `tensor` and it is not a graph output (safe to fuse away)."""
    return len(tensor.outputs) == 1 and tensor not in graph.outputs


def move_output(new_producer: gs.Node, old_producer: gs.Node) -> None:
    """Make `new_producer` produce `old_producer`'s (first) output; `old_producer` is left detached."""
    out = old_producer.outputs[0]
    old_producer.outputs.clear()
    old_producer.inputs.clear()
    new_producer.outputs.clear()
    new_producer.outputs.append(out)


def detach(node: gs.Node) -> None:
    node.inputs.clear()
    node.outputs.clear()


# --- convolution / batch-norm views used by the folding passes ------------------------------------


def conv_kernel(node: gs.Node) -> ConvKernel | None:
    """A 2-D Conv with constant weights (and bias) as numbers; None for anything we do not fold."""
    if node.op != "Conv" or len(node.inputs) < 2:
        return None
    weight = constant_value(node.inputs[1])
    if weight is None or weight.ndim != 4 or weight.dtype.kind != "f":
        return None
    if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].name:
        bias = constant_value(node.inputs[2])
        if bias is None:
            return None
    else:
        bias = np.zeros(weight.shape[0], dtype=weight.dtype)
    attrs = node.attrs
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID"):
        return None
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        return None
    ks = attrs.get("kernel_shape")
    if ks is not None and list(ks) != list(weight.shape[2:]):
        return None
    pads = tuple(int(p) for p in attrs.get("pads", [0, 0, 0, 0]))
    top, left, bottom, right = pads[0], pads[1], pads[2], pads[3]
    strides = tuple(int(s) for s in attrs.get("strides", [1, 1]))
    return ConvKernel(
        weight, bias, (top, left, bottom, right), (strides[0], strides[1]), int(attrs.get("group", 1))
    )


def bn_affine(node: gs.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """An inference-mode BatchNormalization with constant statistics as (scale, shift) per channel."""
    if node.op != "BatchNormalization" or len(node.inputs) != 5:
        return None
    if node.attrs.get("training_mode", 0):
        return None
    if any(o.outputs for o in node.outputs[1:]):  # running-stat outputs in use: a training graph
        return None
    values = [constant_value(t) for t in node.inputs[1:]]
    if any(v is None for v in values):
        return None
    scale, bias, mean, var = values
    return bn_scale_shift(scale, bias, mean, var, float(node.attrs.get("epsilon", 1e-5)))


def write_conv(node: gs.Node, kernel: ConvKernel, names: Names, dtype: np.dtype) -> None:
    """Give Conv `node` new (unshared) weight and bias constants and the kernel's geometry."""
    weight = gs.Constant(names(f"{node.name}.weight"), kernel.weight.astype(dtype))
    bias = gs.Constant(names(f"{node.name}.bias"), kernel.bias.astype(dtype))
    x = node.inputs[0]
    node.inputs.clear()
    node.inputs.extend([x, weight, bias])
    t, l_, b, r = kernel.pads
    node.attrs.update(
        kernel_shape=list(kernel.kernel),
        pads=[t, l_, b, r],
        strides=list(kernel.strides),
        group=kernel.group,
        dilations=[1, 1],
    )
    node.attrs.pop("auto_pad", None)


# inputs that carry shapes, sizes or indices rather than feature data
SHAPE_INPUTS = {
    "Reshape": (1,),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "Slice": (1, 2, 3, 4),
    "Expand": (1,),
    "Tile": (1,),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "Gather": (1,),
    "Unsqueeze": (1,),
    "Squeeze": (1,),
    "Split": (1,),
    "Pad": (1, 2),
    "TopK": (1,),
    "NonMaxSuppression": (2, 3, 4),
    "ReduceSum": (1,),
}


def shape_computation_nodes(graph: gs.Graph) -> list[gs.Node]:
    """Nodes that only compute shapes/sizes/indices (what a Reshape target or Resize size is made of)."""
    shape_nodes: dict[int, gs.Node] = {}
    stack = [
        node.inputs[i]
        for node in graph.nodes
        for i in SHAPE_INPUTS.get(node.op, ())
        if i < len(node.inputs) and node.inputs[i] is not None
    ]
    while stack:
        tensor = stack.pop()
        for node in tensor.inputs:
            if id(node) not in shape_nodes:
                shape_nodes[id(node)] = node
                if node.op not in ("Shape", "Size"):  # they read only the shape of their (data) input
                    stack.extend(t for t in node.inputs if t is not None)
    return list(shape_nodes.values())
