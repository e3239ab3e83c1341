"""Find the post-processing tail of a YOLO detection head in any ONNX graph.

The tail is everything after the last *feature* convolutions: decode and anchor/grid math, the
DFL integral, sigmoid of scores, the concat of boxes with scores. Defined structurally so it
works on exports we did not make: a node belongs to the tail when no feature convolution lies
downstream of it. Decode convolutions (DFL's fixed 0..reg_max-1 kernel) do not count as
feature convolutions. The last feature convolutions themselves are the head's output convs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from graphopt.core.graph import constant_value

FEATURE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass
class HeadTail:
    nodes: list[gs.Node]  # keep these in float
    output_convs: list[gs.Node]  # the last feature convolutions, feeding the tail
    decode_convs: list[gs.Node] = field(default_factory=list)

    def summary(self) -> str:
        kinds = Counter(n.op for n in self.nodes)
        ops = ", ".join(f"{op} ×{c}" for op, c in kinds.most_common(8))
        extra = f"; DFL decode convs {len(self.decode_convs)}" if self.decode_convs else ""
        return (
            f"{len(self.nodes)} nodes after the {len(self.output_convs)} output convs stay float "
            f"({ops}){extra}: box coordinates (pixels) and scores (0-1) must not share an int8 scale"
        )


def is_decode_conv(node: gs.Node) -> bool:
    """DFL: a 1x1 Conv to one channel with the fixed weights 0, 1, …, reg_max-1."""
    if node.op != "Conv" or len(node.inputs) < 2:
        return False
    w = constant_value(node.inputs[1])
    if w is None or w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1):
        return False
    return bool(np.allclose(w.reshape(-1), np.arange(w.shape[1])))


def find_head_tail(graph: gs.Graph) -> HeadTail:
    graph.toposort()
    feature = {id(n) for n in graph.nodes if n.op in FEATURE_OPS and not is_decode_conv(n)}
    has_feature_below: dict[int, bool] = {}
    for node in reversed(graph.nodes):
        below = False
        for out in node.outputs:
            for consumer in out.outputs:
                if id(consumer) in feature or has_feature_below.get(id(consumer), False):
                    below = True
        has_feature_below[id(node)] = below
    tail = [n for n in graph.nodes if id(n) not in feature and not has_feature_below[id(n)]]
    tail_ids = {id(n) for n in tail}
    output_convs = [
        n
        for n in graph.nodes
        if id(n) in feature and all(id(c) in tail_ids for o in n.outputs for c in o.outputs)
    ]
    return HeadTail(tail, output_convs, [n for n in tail if is_decode_conv(n)])


def detection_output_format(shape: object, nc: int | None = None) -> str | None:
    """'yolov5' ([1, N, 5+nc]) or 'anchor-free' ([1, 4+nc, N]) when a graph output has the shape of a
    decoded YOLO head, else None. With `nc` (class names in the metadata) the class axis must match."""
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        return None
    if not all(isinstance(d, int) and d > 0 for d in shape) or shape[0] != 1:
        return None
    _, a, b = shape
    if nc:
        if b == nc + 5 and a > b:
            return "yolov5"
        if a == nc + 4 and b > a:
            return "anchor-free"
        return None
    if a > b >= 6:
        return "yolov5"
    if b > a >= 5:
        return "anchor-free"
    return None
