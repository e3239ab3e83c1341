"""`drop-aux`: remove auxiliary training branches (YOLOv9 PGI) and keep the main output.

How the main output is found, without our metadata: for each output, take the nodes only it
depends on (its exclusive part). YOLOv9's auxiliary reversible branch is a second backbone that
starts again from the image (CBLinear/CBFuse feed it from the main backbone), so the auxiliary
output's exclusive part reads the model input directly; the main output's exclusive part (neck
and head) works only on shared features. Outputs whose exclusive part reads a model input are
auxiliary. `keep=NAME` overrides the analysis, and `graphopt.main_output` metadata (written by
the exporter) is used when present. Only outputs shaped like a decoded detection head are ever
candidates: any other output (a feature map, a second task) is left alone, so a model that is not
a YOLO with PGI branches keeps all its outputs. Dead code goes with the dropped outputs, and the
pass announces each output it removes (the pipeline fails on an output that vanishes unannounced).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from graphopt.errors import GraphoptError
from graphopt.head import detection_output_format
from graphopt.registry import PassContext, PassResult, register
from runtime import metadata as keys
from runtime.metadata import parse_metadata


def _ancestors(tensor: gs.Tensor) -> set[int]:
    """ids of all nodes `tensor` depends on."""
    seen: set[int] = set()
    stack = list(tensor.inputs)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for t in node.inputs:
            stack.extend(t.inputs)
    return seen


@register("drop-aux", lossless=True, options={"keep": ""})
def drop_aux(graph: gs.Graph, ctx: PassContext) -> PassResult:
    """Drop auxiliary branches (YOLOv9 PGI) and keep the main output, found by dependency analysis."""
    outputs = list(graph.outputs)
    names = [o.name for o in outputs]
    keep = ctx.options["keep"]
    if keep and keep not in names:
        raise GraphoptError(
            f"drop-aux.keep='{keep}' is not an output of the model (outputs: {', '.join(names)})"
        )
    if len(outputs) == 1:
        return PassResult(changed=False, notes=["single-output model: no auxiliary branch to drop"])
    meta = parse_metadata(ctx.metadata)
    heads, others = _detection_outputs(outputs, len(meta.names) or None)
    reasoning = []
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
        return PassResult(
            changed=False,
            notes=["fewer than two detection head outputs of one shape: no auxiliary branch to drop"] + reasoning,
        )
    elif meta.main_output in {o.name for o in heads}:
        kept = [o for o in heads if o.name == meta.main_output]
        reasoning.insert(0, f"kept '{meta.main_output}': the model's metadata names it the main output")
    else:
        kept, analysis = _analyse(graph, heads, None)
        reasoning = analysis + reasoning
    dropped = [o.name for o in heads if o not in kept]
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
        details={"kept": [o.name for o in kept], "dropped": dropped},
        metadata=meta_out,
        removed_outputs=dropped,
    )


def _detection_outputs(outputs: list[gs.Tensor], nc: int | None) -> tuple[list[gs.Tensor], list[gs.Tensor]]:
    """(outputs shaped like one decoded YOLO head — the branches drop-aux chooses between —, the rest)."""
    formats = {o.name: detection_output_format(o.shape, nc) for o in outputs}
    shapes = [tuple(o.shape) for o in outputs if formats[o.name]]
    common = max(set(shapes), key=shapes.count) if shapes else None
    heads = [o for o in outputs if formats[o.name] and tuple(o.shape) == common]
    return heads, [o for o in outputs if o not in heads]


def _analyse(
    graph: gs.Graph, outputs: list[gs.Tensor], hinted: str | None
) -> tuple[list[gs.Tensor], list[str]]:
    inputs = {id(t) for t in graph.inputs}
    ancestry = {o.name: _ancestors(o) for o in outputs}
    nodes = {id(n): n for n in graph.nodes}
    aux, main, reasoning = [], [], []
    for o in outputs:
        others = set().union(*(ancestry[p.name] for p in outputs if p is not o))
        exclusive = ancestry[o.name] - others
        readers = [
            nodes[i] for i in exclusive if i in nodes and any(id(t) in inputs for t in nodes[i].inputs)
        ]
        if readers:
            aux.append(o)
            reasoning.append(
                f"'{o.name}' is auxiliary: its exclusive part ({len(exclusive)} nodes) starts a second backbone "
                f"from input '{readers[0].inputs[0].name}' at node '{readers[0].name}'"
            )
        else:
            main.append(o)
            reasoning.append(
                f"'{o.name}' is main: its exclusive part ({len(exclusive)} nodes) reads only shared features"
            )
    if not aux:
        return outputs, [
            "no auxiliary branch found: every output's exclusive part reads only shared features"
        ]
    if not main:
        raise GraphoptError(
            "drop-aux cannot tell the main output (every output has its own backbone); "
            "pass --set drop-aux.keep=NAME"
        )
    if hinted and hinted not in {o.name for o in main}:
        reasoning.append(f"note: metadata names '{hinted}' as main, the graph analysis disagrees")
    return main, reasoning
