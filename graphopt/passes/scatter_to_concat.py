"""`scatter-to-concat`: a ScatterND that overwrites one contiguous slice becomes Slice + Concat.

A head written with in-place slice assignment (`y[..., 0:2] = ...`, yolov7's and yolov5's Detect
outside their export branch) exports as ScatterND with constant indices that enumerate every
position of `data[..., a:b]`. NCNN (pnnx) has no ScatterND layer ("layer ScatterND not exists or
registered"); the same update is `Concat(data[..., :a], updates, data[..., b:])` along that axis,
which every runtime has. Only that exact form is rewritten: indices are checked element by element
against the slice's own grid, so any other scatter (gathered positions, duplicates, a reduction)
is left as it is, as is one whose data shape is unknown (the lossless recipe runs simplify, and with
it shape inference, first).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from graphopt.core.graph import Names, constant_value, nodes_of
from graphopt.passes.registry import PassContext, PassResult, register

# Indices larger than this are not a slice assignment worth checking element by element.
MAX_INDEX_ELEMENTS = 1 << 26


@register("scatter-to-concat", lossless=True)
def scatter_to_concat(graph: gs.Graph, ctx: PassContext) -> PassResult:
    """ScatterND writing one contiguous slice of its data → Slice + Concat along that axis."""
    names = Names(graph)
    rewritten: list[str] = []
    kept: list[str] = []
    for node in nodes_of(graph, "ScatterND"):
        slice_ = _slice_written(node)
        if slice_ is None:
            kept.append(node.name)
            continue
        _rewrite(graph, node, *slice_, names)
        rewritten.append(node.name)
    if rewritten:
        graph.cleanup().toposort()
    notes = [f"rewrote {len(rewritten)} ScatterND as Slice + Concat"]
    if kept:
        notes.append(f"kept {len(kept)} ScatterND (not one contiguous slice, or shapes unknown)")
    return PassResult(changed=bool(rewritten), notes=notes, details={"rewritten": rewritten, "kept": kept})


def _slice_written(node: gs.Node) -> tuple[int, int, int, tuple[int, ...]] | None:
    """(axis, start, stop, data shape) when `node` overwrites exactly data[..., start:stop, ...]."""
    if node.attrs.get("reduction", "none") not in ("none", b"none"):
        return None
    data, indices_t, updates = node.inputs
    shape = data.shape
    if shape is None or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    indices = constant_value(indices_t)
    if indices is None or indices.ndim < 1 or indices.size > MAX_INDEX_ELEMENTS:
        return None
    k = indices.shape[-1]
    if not 1 <= k <= len(shape) or indices.shape[:-1] == ():
        return None
    # ranges covered along the k indexed axes: the per-axis min..max of the indices
    flat = indices.reshape(-1, k).astype(np.int64)
    flat = np.where(flat < 0, flat + np.asarray(shape[:k]), flat)  # ONNX allows negative indices
    lo, hi = flat.min(0), flat.max(0) + 1
    partial = [ax for ax in range(k) if (lo[ax], hi[ax]) != (0, shape[ax])]
    if len(partial) > 1:
        return None
    axis = partial[0] if partial else k - 1
    grid = np.stack(np.meshgrid(*[np.arange(lo[a], hi[a]) for a in range(k)], indexing="ij"), -1)
    if indices.shape != grid.shape or not np.array_equal(flat, grid.reshape(-1, k)):
        return None  # not every position of the slice exactly once, in order
    expected = tuple(int(hi[a] - lo[a]) for a in range(k)) + tuple(shape[k:])
    if updates.shape is not None and tuple(updates.shape) != expected:
        return None
    return axis, int(lo[axis]), int(hi[axis]), tuple(shape)


def _rewrite(
    graph: gs.Graph, node: gs.Node, axis: int, start: int, stop: int, shape: tuple[int, ...], names: Names
) -> None:
    data, _, updates = node.inputs
    out = node.outputs[0]
    parts: list[gs.Tensor] = []
    for lo, hi in ((0, start), (stop, shape[axis])):  # what the scatter leaves as it was, before and after
        if lo == stop:
            parts.append(updates)
        if lo < hi:
            parts.append(_slice(graph, node.name, data, axis, lo, hi, shape, names))
    node.outputs.clear()
    node.inputs.clear()
    graph.nodes.append(gs.Node("Concat", names(f"{node.name}_Concat"), {"axis": axis}, inputs=parts, outputs=[out]))


def _slice(
    graph: gs.Graph, base: str, data: gs.Tensor, axis: int, lo: int, hi: int, shape: tuple[int, ...], names: Names
) -> gs.Variable:
    piece_shape = list(shape)
    piece_shape[axis] = hi - lo
    piece = gs.Variable(names(f"{base}_kept_{lo}_{hi}"), dtype=data.dtype, shape=piece_shape)
    bounds = [gs.Constant(names(f"{base}_{what}_{lo}"), np.asarray([v], dtype=np.int64)) for what, v in
              (("starts", lo), ("ends", hi), ("axes", axis))]
    graph.nodes.append(gs.Node("Slice", names(f"{base}_Slice_{lo}"), inputs=[data, *bounds], outputs=[piece]))
    return piece
