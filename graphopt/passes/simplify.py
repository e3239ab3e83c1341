"""`simplify`: onnxsim constant folding and shape inference; never grows the op count."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs

from graphopt.core.fileio import captured_stderr
from graphopt.core.graph import infer_shapes
from graphopt.core.model import op_histogram, param_count
from graphopt.passes.options import Options, option
from graphopt.passes.registry import PassContext, PassResult, register


def _structure(model: onnx.ModelProto) -> tuple[dict[str, int], int, bytes]:
    """What `changed` is judged on: op counts, parameters, and the declared inputs and outputs (shape
    inference can give an output a static shape that a later pass requires)."""
    io = b"".join(v.SerializeToString() for v in (*model.graph.input, *model.graph.output))
    return op_histogram(model), param_count(model), io


@dataclass(frozen=True)
class SimplifyOptions(Options):
    fuse_bn: bool = option(False, "let onnxsim fold BatchNormalization too (else fold-bn does, checked)")
    use_onnxsim: bool = option(True, "onnxsim first; onnx-graphsurgeon folding when off or when onnxsim fails")


@register("simplify", lossless=True, options=SimplifyOptions)
def simplify(graph: gs.Graph, ctx: PassContext) -> PassResult:
    """Constant folding + shape inference with onnxsim (graphsurgeon folding as fallback)."""
    # one export of the input serves both the before-count and the folding (each export copies every
    # weight: on a large model, extra ones cost a model's size of memory apiece)
    model = gs.export_onnx(graph, do_type_check=False)
    before = _structure(model)
    notes: list[str] = []
    simplified = None
    if ctx.options.use_onnxsim:
        simplified, note = _with_onnxsim(model, fuse_bn=ctx.options.fuse_bn)
        notes.append(note)
    if simplified is None:
        simplified = _with_graphsurgeon(model)
        notes.append("constant folding by onnx-graphsurgeon")
    del model
    after = _structure(simplified)
    nodes_before, nodes_after = sum(before[0].values()), sum(after[0].values())
    if nodes_after > nodes_before:
        notes.append(f"kept the input graph: simplification would grow nodes {nodes_before} → {nodes_after}")
        return PassResult(changed=False, notes=notes)
    if after == before:  # the same graph: the pipeline keeps its input as it is
        return PassResult(changed=False, notes=notes)
    return PassResult(changed=True, notes=notes, graph=gs.import_onnx(simplified))


def _with_graphsurgeon(model: onnx.ModelProto) -> onnx.ModelProto:
    folded = gs.import_onnx(infer_shapes(model)).fold_constants().cleanup()
    return gs.export_onnx(folded, do_type_check=False)


def _with_onnxsim(model: onnx.ModelProto, fuse_bn: bool) -> tuple[onnx.ModelProto | None, str]:
    try:
        import onnxsim
    except ImportError:
        return None, "onnxsim is not installed; fell back to onnx-graphsurgeon constant folding"
    try:
        with captured_stderr() as log:
            simplified, ok = onnxsim.simplify(model, check_n=0, skip_fuse_bn=not fuse_bn)
    except Exception as exc:  # noqa: BLE001 - onnxsim raises many types, including from C++
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return None, f"onnxsim failed ({first}); fell back to onnx-graphsurgeon constant folding"
    if not ok:
        return None, "onnxsim's own check failed; fell back to onnx-graphsurgeon constant folding"
    skipped = sum(1 for line in log.lines if line.startswith("WARNING: failed to run"))
    note = "simplified by onnxsim" + (f" ({skipped} nodes left unevaluated)" if skipped else "")
    return simplified, note
