"""`fold-bn`: BatchNormalization folded into the neighbouring Conv's weights and bias.

Conv → BN always folds (grouped/depthwise too, with or without a Conv bias): each output
channel's filter is scaled and the shift joins the bias. BN → Conv folds where the math is
exact: the Conv has no zero padding (the padded border would otherwise see 0 instead of the BN's
shift) and every consumer of the BN is such a Conv.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from graphopt.core.convmath import fold_bn_after, fold_bn_before
from graphopt.core.graph import (
    Names,
    bn_affine,
    conv_kernel,
    detach,
    move_output,
    nodes_of,
    producer,
    single_consumer,
    write_conv,
)
from graphopt.passes.registry import PassContext, PassResult, register


@register("fold-bn", lossless=True)
def fold_bn(graph: gs.Graph, ctx: PassContext) -> PassResult:
    """Fold BatchNormalization into the adjacent Conv (Conv→BN always, BN→Conv when unpadded)."""
    names = Names(graph)
    after = before = 0
    kept: list[str] = []
    for bn in nodes_of(graph, "BatchNormalization"):
        affine = bn_affine(bn)
        if affine is None:
            kept.append(f"{bn.name} (non-constant statistics or training mode)")
            continue
        if _fold_into_producer(graph, bn, affine, names):
            after += 1
        elif _fold_into_consumers(graph, bn, affine, names):
            before += 1
        else:
            kept.append(f"{bn.name} (no adjacent foldable Conv)")
    notes = [f"folded {after} Conv→BN and {before} BN→Conv"]
    if kept:
        notes.append(
            f"kept {len(kept)} BatchNormalization: " + "; ".join(kept[:5]) + (" …" if len(kept) > 5 else "")
        )
    return PassResult(
        changed=bool(after or before),
        notes=notes,
        details={"conv_bn": after, "bn_conv": before, "kept": kept},
    )


def _fold_into_producer(
    graph: gs.Graph, bn: gs.Node, affine: tuple[np.ndarray, np.ndarray], names: Names
) -> bool:
    x = bn.inputs[0]
    conv = producer(x)
    if conv is None or not single_consumer(x, graph):
        return False
    kernel = conv_kernel(conv)
    if kernel is None or kernel.weight.shape[0] != affine[0].shape[0]:
        return False
    write_conv(conv, fold_bn_after(kernel, *affine), names, kernel.weight.dtype)
    move_output(conv, bn)
    return True


def _fold_into_consumers(
    graph: gs.Graph, bn: gs.Node, affine: tuple[np.ndarray, np.ndarray], names: Names
) -> bool:
    y = bn.outputs[0]
    if y in graph.outputs or not y.outputs:
        return False
    folded = []
    for conv in y.outputs:
        kernel = conv_kernel(conv) if conv.inputs[0] is y else None
        if kernel is None or kernel.weight.shape[1] * kernel.group != affine[0].shape[0]:
            return False
        new = fold_bn_before(kernel, *affine)
        if new is None:
            return False
        folded.append((conv, new, kernel.weight.dtype))
    x = bn.inputs[0]
    for conv, new, dtype in folded:
        write_conv(conv, new, names, dtype)
        conv.inputs[0] = x
    detach(bn)
    return True
