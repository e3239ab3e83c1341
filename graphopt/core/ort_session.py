"""onnxruntime sessions for the compiler: an in-memory model, graph optimizations off by default
(what is checked is the graph as written, not what onnxruntime would rewrite it into)."""

from __future__ import annotations

import contextlib
import ctypes
import sys

import numpy as np
import onnx
import onnxruntime as ort

from graphopt.core.errors import GraphoptError
from runtime.logs import quiet_onnxruntime

Feed = dict[str, np.ndarray]  # one model input set: input name → tensor


def session(model: onnx.ModelProto | bytes, optimize: bool = False, threads: int = 0) -> ort.InferenceSession:
    """`model` as a ModelProto or already serialized (what a caller that serialized it anyway passes)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.intra_op_num_threads = threads
    # these sessions check and measure graphs, they are not timed: idle threads sleep instead of spinning
    # (spinning threads starve whatever else runs, e.g. a second pytest worker or a calibration feeder)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = quiet_onnxruntime(ort)
    try:
        serialized = model if isinstance(model, bytes) else model.SerializeToString()
        return ort.InferenceSession(serialized, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise GraphoptError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0][:300]}") from exc


def run(
    model: onnx.ModelProto | bytes, feeds: list[Feed], outputs: list[str] | None = None, optimize: bool = False
) -> list[dict[str, np.ndarray]]:
    """Every feed through one session: a dict of output name → array per feed (all outputs by default)."""
    sess = session(model, optimize=optimize)
    names = outputs or [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    results = []
    for feed in feeds:
        values = sess.run(names, {k: v for k, v in feed.items() if k in inputs})
        results.append(dict(zip(names, values, strict=True)))
    del sess
    release_freed_memory()
    return results


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc keeps what a session freed, so a pipeline
    of sessions on a large model would otherwise grow by a model's worth per step)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            ctypes.CDLL("libc.so.6").malloc_trim(0)
