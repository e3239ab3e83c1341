"""`drop-aux`: remove auxiliary training branches (YOLOv9 PGI) and keep the main output.

How the main output is found, without our metadata: for each output, take the nodes only it
depends on (its exclusive part). YOLOv9's auxiliary reversible branch is either a second backbone
that starts again from the image (yolov9-c/m) or a second, top-down-only neck (yolov9-t/s/e), while
the main branch ends in a PAN neck that downsamples again; see `_analyse`. When neither tells them apart
the pass stops and asks for `keep=NAME` rather than leave two detection outputs. `keep=NAME`
overrides the analysis, and `graphopt.main_output` metadata (written by the exporter) is used
when present. Only outputs shaped like a decoded detection head are ever
candidates: any other output (a feature map, a second task) is left alone, so a model that is not
a YOLO with PGI branches keeps all its outputs. Dead code goes with the dropped outputs, and the
pass announces each output it removes (the pipeline fails on an output that vanishes unannounced).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from graphopt.core.errors import GraphoptError
from graphopt.core.graph import ancestor_nodes
from graphopt.core.head import detection_output_format
from graphopt.passes.options import Options, option
from graphopt.passes.registry import PassContext, PassResult, register
from runtime import metadata as keys
from runtime.metadata import parse_metadata


@dataclass(frozen=True)
class DropAuxOptions(Options):
    keep: str | None = option(None, "the output to keep (overrides metadata and the graph analysis)")


@register("drop-aux", lossless=True, options=DropAuxOptions)
def drop_aux(graph: gs.Graph, ctx: PassContext) -> PassResult:
    """Drop auxiliary branches (YOLOv9 PGI) and leaked raw head maps; keep the main detection output."""
    outputs = list(graph.outputs)
    names = [o.name for o in outputs]
    keep = ctx.options.keep
    if keep and keep not in names:
        raise GraphoptError(
            f"drop-aux.keep='{keep}' is not an output of the model (outputs: {', '.join(names)})"
        )
    if len(outputs) == 1:
        return PassResult(changed=False, notes=["single-output model: no auxiliary branch to drop"])
    meta = parse_metadata(ctx.metadata)
    heads, others = _detection_outputs(outputs, len(meta.names) or None)
    leaked, reasoning = _leaked_head_maps(heads, others)
    others = [o for o in others if o not in leaked]
    if others:
        reasoning.append(
            "left alone (not a decoded detection head): "
            + ", ".join(f"'{o.name}' {list(o.shape) if o.shape is not None else '?'}" for o in others)
        )
    if keep:
        if keep not in {o.name for o in heads}:
            raise GraphoptError(
                f"drop-aux.keep='{keep}' is not a detection head output; drop-aux only chooses between the "
                f"branches of a detection head ({', '.join(o.name for o in heads) or 'none found'})"
            )
        kept = [o for o in heads if o.name == keep]
        reasoning.insert(0, f"kept '{keep}' as asked (drop-aux.keep)")
    elif len(heads) < 2:
        kept = heads
        if not leaked:
            reasoning.insert(0, "fewer than two detection head outputs of one shape: no auxiliary branch to drop")
    elif meta.main_output in {o.name for o in heads}:
        kept = [o for o in heads if o.name == meta.main_output]
        reasoning.insert(0, f"kept '{meta.main_output}': the model's metadata names it the main output")
    else:
        kept, analysis = _analyse(graph, heads)
        reasoning = analysis + reasoning
    dropped = [o.name for o in heads if o not in kept] + [o.name for o in leaked]
    if not dropped:
        return PassResult(changed=False, notes=reasoning)
    before = len(graph.nodes)
    graph.outputs = [o for o in outputs if o in kept or o in others]
    graph.cleanup()
    reasoning.append(
        f"dropped output(s) {', '.join(dropped)} and {before - len(graph.nodes)} nodes only they used"
    )
    meta_out = {keys.MAIN_OUTPUT: kept[0].name} if len(kept) == 1 else {}
    return PassResult(
        changed=True,
        notes=reasoning,
        details={"kept": [o.name for o in kept], "dropped": dropped, "leaked": [o.name for o in leaked]},
        metadata=meta_out,
        removed_outputs=dropped,
    )


def _leaked_head_maps(
    heads: list[gs.Tensor], others: list[gs.Tensor]
) -> tuple[list[gs.Tensor], list[str]]:
    """Raw, per-scale head maps that an exporter left as outputs beside the decoded one (YOLOv5's
    `(decoded, raw_maps)` training-form return): each is an intermediate the decoded output is
    computed from, shaped [1, na, h, w, 5+nc] or [1, 4*reg_max+nc, h, w]."""
    if not heads:
        return [], []
    leaked, notes = [], []
    for head in heads:
        upstream = {id(t) for n in ancestor_nodes(head) for t in n.inputs}
        last = head.shape[-1] if detection_output_format(head.shape) == "yolov5" else None
        classes = head.shape[1] - 4 if last is None else last - 5
        for o in others:
            shape = o.shape
            if o in leaked or id(o) not in upstream or not shape or not all(isinstance(d, int) for d in shape):
                continue
            anchor_map = len(shape) == 5 and last is not None and shape[-1] == last
            free_map = len(shape) == 4 and last is None and shape[1] > classes and (shape[1] - classes) % 4 == 0
            if anchor_map or free_map:
                leaked.append(o)
                notes.append(
                    f"'{o.name}' {list(shape)} is a raw head map that '{head.name}' is decoded from "
                    "(a training-form output the exporter leaked): dropped"
                )
    return leaked, notes


def _detection_outputs(outputs: list[gs.Tensor], nc: int | None) -> tuple[list[gs.Tensor], list[gs.Tensor]]:
    """(outputs shaped like one decoded YOLO head — the branches drop-aux chooses between —, the rest)."""
    formats = {o.name: detection_output_format(o.shape, nc) for o in outputs}
    shapes = [tuple(o.shape) for o in outputs if formats[o.name]]
    common = max(set(shapes), key=shapes.count) if shapes else None
    heads = [o for o in outputs if formats[o.name] and tuple(o.shape) == common]
    return heads, [o for o in outputs if o not in heads]


def _downsamples(node: gs.Node) -> bool:
    """A strided Conv or pooling: the bottom-up path of a PAN neck (YOLOv9's AConv/ADown)."""
    if node.op not in ("Conv", "AveragePool", "MaxPool"):
        return False
    return any(int(s) > 1 for s in node.attrs.get("strides", [1, 1]))


def _analyse(graph: gs.Graph, outputs: list[gs.Tensor]) -> tuple[list[gs.Tensor], list[str]]:
    """The main output among several outputs of one detection head, from the graph alone.

    YOLOv9's main branch always ends in a PAN neck, whose bottom-up path downsamples again
    (strided conv or pooling). Its auxiliary (PGI) branch is either a second, top-down-only neck —
    an FPN: upsample and concat, no downsampling (yolov9-t/s, and -e, whose main branch is the
    second backbone) — or a second backbone that restarts from the image with no neck of its own
    (yolov9-c/m, fed by CBLinear/CBFuse). So: an output whose exclusive part never downsamples is
    auxiliary; failing that, one whose exclusive part reads the model input is. Anything else
    cannot be told apart safely: stop and ask for `keep`.
    """
    inputs = {id(t) for t in graph.inputs}
    ancestry = {o.name: {id(n) for n in ancestor_nodes(o)} for o in outputs}
    nodes = {id(n): n for n in graph.nodes}
    restarts: dict[str, gs.Node | None] = {}
    strided: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for o in outputs:
        others = set().union(*(ancestry[p.name] for p in outputs if p is not o))
        exclusive = [nodes[i] for i in ancestry[o.name] - others if i in nodes]
        sizes[o.name] = len(exclusive)
        restarts[o.name] = next((n for n in exclusive if any(id(t) in inputs for t in n.inputs)), None)
        strided[o.name] = sum(_downsamples(n) for n in exclusive)
    reasoning = []
    top_down_only = [o for o in outputs if strided[o.name] == 0]
    if top_down_only and len(top_down_only) < len(outputs):
        for o in outputs:
            if strided[o.name]:
                reasoning.append(
                    f"'{o.name}' is main: its exclusive part ({sizes[o.name]} nodes) downsamples "
                    f"({strided[o.name]} strided op(s): a PAN neck's bottom-up path, or a backbone)"
                )
            else:
                reasoning.append(
                    f"'{o.name}' is auxiliary: its exclusive part ({sizes[o.name]} nodes) is a second, "
                    "top-down-only neck (no downsampling)"
                )
        return [o for o in outputs if strided[o.name]], reasoning
    second_backbone = [o for o in outputs if restarts[o.name] is not None]
    if second_backbone and len(second_backbone) < len(outputs):
        for o in outputs:
            reader = restarts[o.name]
            if reader is not None:
                reasoning.append(
                    f"'{o.name}' is auxiliary: its exclusive part ({sizes[o.name]} nodes) starts a second "
                    f"backbone from input '{reader.inputs[0].name}' at node '{reader.name}'"
                )
            else:
                reasoning.append(
                    f"'{o.name}' is main: its exclusive part ({sizes[o.name]} nodes) reads only shared features"
                )
        return [o for o in outputs if restarts[o.name] is None], reasoning
    names = ", ".join(o.name for o in outputs)
    raise GraphoptError(
        f"drop-aux cannot tell which of the detection outputs {names} is the main one from the graph "
        "(no graphopt.main_output metadata); name it: --set drop-aux.keep=NAME"
    )
