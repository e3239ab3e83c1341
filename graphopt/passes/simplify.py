"""`simplify`: onnxsim constant folding and shape inference; never grows the op count."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from graphopt.core.fileio import captured_stderr
from graphopt.core.graph import infer_shapes
from graphopt.core.model import op_histogram, param_count
from graphopt.passes.options import Options, option
from graphopt.passes.registry import PassContext, PassResult, register


def _structure(graph: gs.Graph) -> tuple[dict[str, int], int]:
    model = gs.export_onnx(graph, do_type_check=False)
    return op_histogram(model), param_count(model)


@dataclass(frozen=True)
class SimplifyOptions(Options):
    fuse_bn: bool = option(False, "let onnxsim fold BatchNormalization too (else fold-bn does, checked)")
    use_onnxsim: bool = option(True, "onnxsim first; onnx-graphsurgeon folding when off or when onnxsim fails")


@register("simplify", lossless=True, options=SimplifyOptions)
def simplify(graph: gs.Graph, ctx: PassContext) -> PassResult:
    """Constant folding + shape inference with onnxsim (graphsurgeon folding as fallback)."""
    before_ops, before_params = _structure(graph)
    notes: list[str] = []
    new_graph = None
    if ctx.options.use_onnxsim:
        new_graph, note = _with_onnxsim(graph, fuse_bn=ctx.options.fuse_bn)
        notes.append(note)
    if new_graph is None:
        new_graph = _with_graphsurgeon(graph)
        notes.append("constant folding by onnx-graphsurgeon")
    after_ops, after_params = _structure(new_graph)
    if sum(after_ops.values()) > sum(before_ops.values()):
        notes.append(
            f"kept the input graph: simplification would grow nodes {sum(before_ops.values())} → {sum(after_ops.values())}"
        )
        return PassResult(changed=False, notes=notes)
    changed = (after_ops, after_params) != (before_ops, before_params)
    return PassResult(changed=changed, notes=notes, graph=new_graph)


def _with_graphsurgeon(graph: gs.Graph) -> gs.Graph:
    # Shapes must be known for Shape→Gather chains to fold, so infer them first.
    model = infer_shapes(gs.export_onnx(graph, do_type_check=False))
    return gs.import_onnx(model).fold_constants().cleanup()


def _with_onnxsim(graph: gs.Graph, fuse_bn: bool) -> tuple[gs.Graph | None, str]:
    try:
        import onnxsim
    except ImportError:
        return None, "onnxsim is not installed; fell back to onnx-graphsurgeon constant folding"
    model = gs.export_onnx(graph, do_type_check=False)
    try:
        with captured_stderr() as log:
            # BatchNorm folding is left to `fold-bn` unless asked for (it is checked and reported there).
            simplified, ok = onnxsim.simplify(model, check_n=0, skip_fuse_bn=not fuse_bn)
    except Exception as exc:  # noqa: BLE001 - onnxsim raises many types, including from C++
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return None, f"onnxsim failed ({first}); fell back to onnx-graphsurgeon constant folding"
    if not ok:
        return None, "onnxsim's own check failed; fell back to onnx-graphsurgeon constant folding"
    # onnxsim's C++ core prints one warning per node it could not evaluate (shape-dependent ones):
    # harmless, so they become one count in the report instead of a wall of text.
    skipped = sum(1 for line in log.lines if line.startswith("WARNING: failed to run"))
    note = "simplified by onnxsim" + (f" ({skipped} nodes left unevaluated)" if skipped else "")
    return gs.import_onnx(simplified), note
