"""How much to prune where: unit importance, per-group sensitivity, and the MACs-constrained allocation
behind the `prune` pass.

- Importance ranks the units inside a group: `l2` (the norm of the filters that produce the unit,
  each conv's norms scaled to mean 1 so coupled convs weigh alike) or `activation` (the mean
  absolute value of the unit's channels on calibration images).
- Sensitivity: each group alone loses its least important `probe` fraction of units; the pruned
  model's head error against the unpruned one on calibration images is the group's sensitivity.
- Allocation meets a global MACs target greedily: each step removes `round_to` more units from the
  group whose modelled error grows least per MAC saved (error ∝ fraction removed², fitted to the
  probe), never below a group's floor, never touching small groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from graphopt.core import ort_session
from graphopt.core.graph import constant_value, to_model
from graphopt.core.ort_session import Feed
from graphopt.prune import channels
from graphopt.prune.channels import ChannelGraph, Group


@dataclass
class ConvGeometry:
    hw: int  # output positions
    kernel: int  # kernel area
    groups: int
    cout: int
    cin: int


def geometry(model: onnx.ModelProto) -> tuple[dict[str, ConvGeometry], int]:
    """Per Conv its geometry, and the MACs of every other compute op (unchanged by pruning)."""
    from graphopt.core.macs import node_macs, tensor_shapes

    shapes = tensor_shapes(model)  # the shapes MACs are counted from (symbolic inference where ONNX's stops)
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    geo: dict[str, ConvGeometry] = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        w = inits.get(node.input[1])
        y = shapes.get(node.output[0])
        if not w or not y or len(y) != 4 or 0 in y:
            continue
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        geo[node.name] = ConvGeometry(y[2] * y[3], int(np.prod(w[2:])), groups, w[0], w[1] * groups)
    other = sum(m for name, (op, m) in node_macs(model).items() if name not in geo)
    return geo, int(other)


def macs(cg: ChannelGraph, geo: dict[str, ConvGeometry], other: int, removed: set[int]) -> int:
    out, inp = cg.kept_counts(removed)
    total = other
    for name, g in geo.items():
        o = out.get(name, g.cout)
        if name in cg.depthwise:
            total += g.hw * g.kernel * o
        else:
            total += g.hw * g.kernel * o * inp.get(name, g.cin) // g.groups
    return int(total)


# --- importance ----------------------------------------------------------------------------------


def l2_importance(cg: ChannelGraph, model_nodes: dict[str, Any]) -> dict[int, float]:
    """Unit root → norm of the filters producing it (each conv's filter norms scaled to mean 1)."""
    score: dict[int, float] = {}
    for name, units in cg.producers.items():
        w = constant_value(model_nodes[name].inputs[1])
        norms = np.sqrt((w.reshape(w.shape[0], -1).astype(np.float64) ** 2).sum(1))
        norms = norms / max(norms.mean(), 1e-12)
        for u, n in zip(units, norms, strict=True):
            r = cg.root(u)
            score[r] = score.get(r, 0.0) + float(n) ** 2
    return {r: s**0.5 for r, s in score.items()}


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also outputs the tensors `names`."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    for name in names:
        if name not in existing:
            out.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return out


def cut_at(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """`model` computing only the tensors `names` (its new outputs): the nodes they do not need are gone,
    so onnxruntime does not run them. Graph inputs stay (callers feed them all)."""
    graph = model.graph
    subgraph = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    if any(a.type in subgraph for n in graph.node for a in n.attribute):
        # a subgraph may read outer tensors by name: graphsurgeon tracks those references
        return _cut_with_graphsurgeon(model, names)
    # Walking the protobuf backwards from the outputs: a fraction of graphsurgeon's import + cleanup +
    # export, which recovery pays once per wave on the whole model.
    producer = {o: i for i, node in enumerate(graph.node) for o in node.output if o}
    keep: set[int] = set()
    used = set(names)
    stack = list(names)
    while stack:
        i = producer.get(stack.pop())
        if i is None or i in keep:
            continue
        keep.add(i)
        for t in graph.node[i].input:
            if t and t not in used:
                used.add(t)
                stack.append(t)
    declared = {v.name: v for v in [*graph.value_info, *graph.output, *graph.input]}
    out = onnx.ModelProto(
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
    )
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    out.metadata_props.extend(model.metadata_props)
    g = out.graph
    g.name = graph.name
    g.node.extend(graph.node[i] for i in sorted(keep))
    g.initializer.extend(t for t in graph.initializer if t.name in used)
    g.sparse_initializer.extend(t for t in graph.sparse_initializer if t.values.name in used)
    g.input.extend(graph.input)
    g.value_info.extend(v for v in graph.value_info if v.name in used and v.name not in names)
    for name in names:
        if name in declared and declared[name].type.tensor_type.elem_type:
            g.output.append(declared[name])
        else:
            g.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return out


def _cut_with_graphsurgeon(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    graph.outputs = [tensors[n] for n in names]
    for t in graph.outputs:
        if t.dtype is None:
            t.dtype = np.float32
    return to_model(graph.cleanup(), model)


def channel_means(
    model: onnx.ModelProto, feeds: list[Feed], tensors: list[str], absolute: bool
) -> dict[str, np.ndarray]:
    """Per tensor, the mean (or mean |x|) of each channel over positions and feeds."""
    if not tensors:
        return {}
    sess = ort_session.session(with_outputs(model, tensors))
    sums: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(tensors, sess.run(tensors, feed), strict=True):
            v = np.abs(value) if absolute else value
            m = v.astype(np.float64).mean(axis=(0, 2, 3))
            sums[name] = sums.get(name, 0) + m
    return {k: v / len(feeds) for k, v in sums.items()}


def activation_importance(cg: ChannelGraph, model: onnx.ModelProto, feeds: list[Feed]) -> dict[int, float]:
    """Unit root → mean |activation| of its channels on the feeds (each producer's conv output)."""
    means = channel_means(model, feeds, [cg.conv_output[n] for n in cg.producers], absolute=True)
    score: dict[int, float] = {}
    for name, units in cg.producers.items():
        m = means[cg.conv_output[name]]
        m = m / max(m.mean(), 1e-12)
        for u, v in zip(units, m, strict=True):
            r = cg.root(u)
            score[r] = score.get(r, 0.0) + float(v)
    return score


# --- sensitivity and allocation ------------------------------------------------------------------


@dataclass
class GroupPlan:
    group: Group
    order: list[int]  # units, least important first
    allowed: list[int]  # kept counts it may take, descending (the first is all)
    sensitivity: float = 0.0
    probe_kept: int = 0
    kept: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.group.convs[0]

    def removed(self) -> list[int]:
        return self.order[: len(self.order) - (self.kept - self.group.protected)]


def allowed_counts(size: int, protected: int, round_to: int, floor: float) -> list[int]:
    """Kept channel counts a group may take: all of them, or multiples of `round_to` ≥ the floor."""
    low = max(round_to, int(np.ceil(floor * size)), protected)
    counts = [size] + [k for k in range((size - 1) // round_to * round_to, low - 1, -round_to) if k >= low]
    return [c for c in counts if c - protected >= 0]


def plan_groups(
    groups: list[Group], importance: dict[int, float], round_to: int, floor: float, min_channels: int
) -> list[GroupPlan]:
    plans = []
    for g in groups:
        if g.size <= min_channels:
            continue
        allowed = allowed_counts(g.size, g.protected, round_to, floor)
        if len(allowed) < 2:
            continue
        order = sorted(g.units, key=lambda u: importance.get(u, 0.0))
        plans.append(GroupPlan(g, order, allowed, kept=g.size))
    return plans


def allocate(
    plans: list[GroupPlan],
    cg: ChannelGraph,
    geo: dict[str, ConvGeometry],
    other: int,
    target_macs: int,
) -> tuple[set[int], list[dict[str, Any]]]:
    """Greedy: remove the next `round_to` step from the group whose modelled error grows least per MAC."""

    def modelled(p: GroupPlan, kept: int) -> float:
        probe = p.group.size - p.probe_kept
        return p.sensitivity * ((p.group.size - kept) / max(probe, 1)) ** 2

    def removed_set() -> set[int]:
        return {u for p in plans for u in p.removed()}

    log: list[dict[str, Any]] = []
    current = macs(cg, geo, other, removed_set())
    while current > target_macs:
        best = None
        for p in plans:
            i = p.allowed.index(p.kept)
            if i + 1 >= len(p.allowed):
                continue
            nxt = p.allowed[i + 1]
            before = p.kept
            p.kept = nxt
            saved = current - macs(cg, geo, other, removed_set())
            p.kept = before
            if saved <= 0:
                continue
            cost = (modelled(p, nxt) - modelled(p, before)) / saved
            if best is None or cost < best[0]:
                best = (cost, p, nxt, saved)
        if best is None:
            break
        _, p, nxt, saved = best
        p.kept = nxt
        current -= saved
        log.append({"group": p.name, "kept": nxt, "macs": current})
    return removed_set(), log


def probe_sensitivity(
    plans: list[GroupPlan],
    probe: float,
    measure: Callable[[set[int]], float],
    progress: Callable[[Any], Any] = lambda x: x,
) -> None:
    """Each group alone without its least important `probe` fraction (rounded to an allowed count)."""
    for p in progress(plans):
        want = p.group.size * (1 - probe)
        p.probe_kept = min(
            (c for c in p.allowed[1:] if c <= want), default=p.allowed[-1], key=lambda c: want - c
        )
        keep_units = p.probe_kept - p.group.protected
        removed = set(p.order[: len(p.order) - keep_units])
        p.sensitivity = float(measure(removed))


class PrunedModels:
    """Candidates pruned from one model, all from one analysis of it: `candidates(removed)` is `original`
    without the units in `removed` (one graphsurgeon import for every probe instead of one each)."""

    def __init__(self, original: onnx.ModelProto) -> None:
        self.original = original
        self.cg = channels.analyse(gs.import_onnx(original))

    def __call__(self, removed: set[int]) -> onnx.ModelProto:
        # no cleanup: it would drop nodes the undo cannot put back; the replaced constants are
        # unreferenced and not exported, and apply leaves no dead node behind but a Constant's
        with channels.applied(self.cg, removed):
            return to_model(self.cg.graph, self.original)


def detection_error(
    head: str | None, reference: list[np.ndarray], output: str, feeds: list[Feed], original: onnx.ModelProto
) -> Callable[[onnx.ModelProto], float]:
    """Detection error of a candidate against the unpruned model: mean score error of confident anchors
    plus the box error in input widths; 1 − cosine for heads of unknown format."""
    from graphopt.core.compare import cosine
    from graphopt.eval.head_error import head_error

    dims = original.graph.input[0].type.tensor_type.shape.dim
    width = max(dims[2].dim_value, dims[3].dim_value, 1)

    def error(model: onnx.ModelProto) -> float:
        got = [r[output] for r in ort_session.run(model, feeds, outputs=[output])]
        if head in ("yolov5", "anchor-free"):
            e = head_error(reference, got, head)
            return float(e.score_error + e.box_error_px / width)
        return float(1.0 - cosine(reference, got))

    return error
