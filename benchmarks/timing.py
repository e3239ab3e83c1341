"""Interleaved latency measurement: models take turns on the same input, so machine noise
(shared, 2 cores) hits every model alike and the printed ratios stay meaningful."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np

from runtime.stats import interleaved  # noqa: F401 - the one interleaving loop, re-exported


def speedup(times: dict[str, list[float]], base: str, name: str) -> float:
    """Median over rounds of base_ms / name_ms (per-round ratios cancel the machine's drift)."""
    return float(statistics.median(b / m for b, m in zip(times[base], times[name], strict=True)))


def summary(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {
        "median_ms": float(statistics.median(ms)),
        "mean_ms": float(arr.mean()),
        "p10_ms": float(np.percentile(arr, 10)),
        "p90_ms": float(np.percentile(arr, 90)),
    }


def ort_runner(path: str, threads: int = 2, optimize: bool = True) -> tuple[Callable[[], object], dict]:
    """An onnxruntime session on `path` as users run it (graph optimizations on by default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Idle pools of the other sessions spin on the 2 cores and bias interleaved runs: spinning off.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    return (lambda: sess.run(None, feed)), {"input": inp.name, "shape": shape}
