"""`fold-reparam`: parallel convolution branches summed together become one convolution.

RepVGG, RepConv (YOLOv6/v7, Ultralytics) and RepConvN (YOLOv9) train a k×k conv, a 1×1 conv and
optionally an identity/BN branch over the same input and add them. At inference the sum is one
conv: kernels zero-padded to the largest size (centred) and added, biases added, the identity as a
centred one-hot kernel. Branches may still carry their BatchNormalization (folded here on the
fly) or have it folded already by `fold-bn`. Any kernel sizes merge when stride, group, channels
and the padded geometry agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from graphopt.core.convmath import ConvKernel, fold_bn_after, identity_kernel, merge_parallel
from graphopt.core.graph import (
    Names,
    bn_affine,
    constant_value,
    conv_kernel,
    detach,
    nodes_of,
    producer,
    single_consumer,
    write_conv,
)
from graphopt.passes.registry import PassContext, PassResult, register


@dataclass
class _Branch:
    source: gs.Tensor  # the shared input all branches read
    kernel: ConvKernel | None  # None: identity (kernel built once the channel/group layout is known)
    affine: tuple[np.ndarray, np.ndarray] | None = None  # identity through a BN
    dtype: np.dtype | None = None


@register("fold-reparam", lossless=True)
def fold_reparam(graph: gs.Graph, ctx: PassContext) -> PassResult:
    """Merge parallel conv branches (k×k + 1×1 + identity/BN) summed by Add into one Conv."""
    names = Names(graph)
    merged: list[str] = []
    for add in _add_roots(graph):
        description = _try_merge(graph, add, names)
        if description:
            merged.append(description)
    notes = [f"merged {len(merged)} parallel-branch sums into single convolutions"]
    return PassResult(changed=bool(merged), notes=notes, details={"merged": merged})


def _add_roots(graph: gs.Graph) -> list[gs.Node]:
    """Add nodes that are not themselves an operand folded into a larger Add tree."""
    roots = []
    for node in nodes_of(graph, "Add"):
        out = node.outputs[0]
        inner = single_consumer(out, graph) and out.outputs[0].op == "Add"
        if not inner:
            roots.append(node)
    return roots


def _leaves(graph: gs.Graph, add: gs.Node) -> tuple[list[gs.Tensor], list[gs.Node]] | None:
    """Operands of an Add tree (inner Adds used only by the tree), constant-zero operands dropped."""
    leaves, adds, stack = [], [add], list(add.inputs)
    while stack:
        t = stack.pop()
        node = producer(t)
        if node is not None and node.op == "Add" and single_consumer(t, graph):
            adds.append(node)
            stack.extend(node.inputs)
            continue
        value = constant_value(t)
        if value is not None:
            if np.any(value):
                return None  # a non-zero constant term: not a pure branch sum
            continue
        leaves.append(t)
    return leaves, adds


def _branch(graph: gs.Graph, leaf: gs.Tensor) -> _Branch | None:
    node = producer(leaf)
    if node is not None and node.op == "Conv":
        kernel = conv_kernel(node)
        return _Branch(node.inputs[0], kernel, dtype=kernel.weight.dtype) if kernel else None
    if node is not None and node.op == "BatchNormalization":
        affine = bn_affine(node)
        if affine is None:
            return None
        inner = producer(node.inputs[0])
        if inner is not None and inner.op == "Conv" and single_consumer(node.inputs[0], graph):
            kernel = conv_kernel(inner)
            if kernel is not None and kernel.weight.shape[0] == affine[0].shape[0]:
                return _Branch(inner.inputs[0], fold_bn_after(kernel, *affine), dtype=kernel.weight.dtype)
            return None
        return _Branch(node.inputs[0], None, affine=affine)  # BN on the identity (RepVGG)
    return _Branch(leaf, None)  # the input itself: identity


def _try_merge(graph: gs.Graph, add: gs.Node, names: Names) -> str | None:
    found = _leaves(graph, add)
    if found is None:
        return None
    leaves, adds = found
    if len(leaves) < 2 or any(
        not single_consumer(t, graph)
        for t in leaves
        if producer(t) is not None and producer(t).op in ("Conv", "BatchNormalization")
    ):
        return None
    branches = [_branch(graph, t) for t in leaves]
    if any(b is None for b in branches) or len({id(b.source) for b in branches}) != 1:
        return None
    convs = [b for b in branches if b.kernel is not None]
    if not convs:
        return None
    group = convs[0].kernel.group
    kernels = []
    for b in branches:
        if b.kernel is not None:
            kernels.append(b.kernel)
            continue
        channels = convs[0].kernel.weight.shape[0]
        if convs[0].kernel.weight.shape[1] * group != channels:  # identity needs Cin == Cout
            return None
        s, t = b.affine if b.affine is not None else (None, None)
        kernels.append(identity_kernel(channels, group, s, t))
    merged = merge_parallel(kernels)
    if merged is None:
        return None
    # The first conv branch becomes the merged conv; the rest of the tree dies (cleanup removes it).
    anchor = producer(leaves[branches.index(convs[0])])
    if anchor.op == "BatchNormalization":
        anchor = producer(anchor.inputs[0])
    out = add.outputs[0]
    source = branches[0].source
    for node in adds:
        detach(node)
    write_conv(anchor, merged, names, convs[0].dtype)
    anchor.inputs[0] = source
    anchor.outputs.clear()
    anchor.outputs.append(out)
    kh, kw = merged.kernel
    return f"{out.name}: {len(branches)} branches → one {kh}x{kw} Conv"
