"""`drop-aux`: remove auxiliary training branches (YOLOv9 PGI) and keep the main output.

How the main output is found, without our metadata: for each output, take the nodes only it
depends on (its exclusive part). YOLOv9's auxiliary reversible branch is a second backbone that
starts again from the image (CBLinear/CBFuse feed it from the main backbone), so the auxiliary
output's exclusive part reads the model input directly; the main output's exclusive part (neck
and head) works only on shared features. Outputs whose exclusive part reads a model input are
auxiliary. `keep=NAME` overrides the analysis. Dead code goes with the dropped outputs.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from graphopt.errors import GraphoptError
from graphopt.registry import PassContext, PassResult, register
from runtime import metadata as keys


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
    if keep:
        if keep not in names:
            raise GraphoptError(
                f"drop-aux.keep='{keep}' is not an output of the model (outputs: {', '.join(names)})"
            )
        kept = [o for o in outputs if o.name == keep]
        reasoning = [f"kept '{keep}' as asked (drop-aux.keep)"]
    elif len(outputs) == 1:
        return PassResult(changed=False, notes=["single-output model: no auxiliary branch to drop"])
    else:
        kept, reasoning = _analyse(graph, outputs, ctx.metadata.get(keys.MAIN_OUTPUT))
    if len(kept) == len(outputs):
        return PassResult(changed=False, notes=reasoning)
    before = len(graph.nodes)
    graph.outputs = kept
    graph.cleanup()
    dropped = [n for n in names if n not in {o.name for o in kept}]
    reasoning.append(
        f"dropped output(s) {', '.join(dropped)} and {before - len(graph.nodes)} nodes only they used"
    )
    meta = {keys.MAIN_OUTPUT: kept[0].name} if len(kept) == 1 else {}
    return PassResult(
        changed=True,
        notes=reasoning,
        details={"kept": [o.name for o in kept], "dropped": dropped},
        metadata=meta,
    )


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
