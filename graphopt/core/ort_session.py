"""onnxruntime sessions for the compiler: an in-memory model, graph optimizations off by default
(what is checked is the graph as written, not what onnxruntime would rewrite it into)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from graphopt.core.errors import GraphoptError
from runtime.logs import quiet_onnxruntime

Feed = dict[str, np.ndarray]  # one model input set: input name → tensor


def session(model: onnx.ModelProto, optimize: bool = False, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.intra_op_num_threads = threads
    opts.log_severity_level = quiet_onnxruntime(ort)
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise GraphoptError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0][:300]}") from exc


def run(
    model: onnx.ModelProto, feeds: list[Feed], outputs: list[str] | None = None, optimize: bool = False
) -> list[dict[str, np.ndarray]]:
    """Every feed through one session: a dict of output name → array per feed (all outputs by default)."""
    sess = session(model, optimize=optimize)
    names = outputs or [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    results = []
    for feed in feeds:
        values = sess.run(names, {k: v for k, v in feed.items() if k in inputs})
        results.append(dict(zip(names, values, strict=True)))
    return results
