"""What int8 costs, per layer and in total, and the budget loop that buys accuracy back.

Sensitivity is measured in one run, the way onnxruntime's `qdq_loss_debug` does it: the float model
and the fully quantized model get every intermediate tensor as an output, both run on the same
images, and each float tensor is matched with its QDQ counterpart. A layer's sensitivity is how
much signal-to-quantization-noise ratio (SQNR, dB) is lost across it — at its output against at
its input — so the layers that add the most error rank first. Images run one at a time (memory
is one image's activations, as in calibration). The budget loop then returns the most sensitive
layers to float until the measured loss fits: mAP50-95 points with a labeled data.yaml, else the
mean score error of the decoded head, in points.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graphopt.core import ort_session


def run_outputs(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], output: str) -> list[np.ndarray]:
    return [r[output] for r in ort_session.run(model, feeds, outputs=[output], optimize=True)]


def _with_all_outputs(model: onnx.ModelProto, path: Path) -> Path:
    """`model` with every intermediate tensor as an output (onnxruntime's qdq_loss_debug helper)."""
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    source = path.with_suffix(".in.onnx")
    onnx.save_model(model, str(source))
    modify_model_output_intermediate_tensors(str(source), str(path))
    return path


def _saved_name(output: str) -> str:
    """The tensor an augmented model's output saves (qdq_loss_debug appends a suffix)."""
    from onnxruntime.quantization.qdq_loss_debug import _TENSOR_SAVE_POSTFIX

    return output.removesuffix(_TENSOR_SAVE_POSTFIX)


def _saved(tensor: str, sess: Any) -> str:
    names = {o.name for o in sess.get_outputs()}
    from onnxruntime.quantization.qdq_loss_debug import _TENSOR_SAVE_POSTFIX

    return tensor + _TENSOR_SAVE_POSTFIX if tensor + _TENSOR_SAVE_POSTFIX in names else tensor


# SQNR treated as "exact" (fp32 rounding level) where a tensor has no quantization noise at all.
EXACT_DB = 60.0


def _sqnr_db(signal: np.ndarray, noisy: np.ndarray) -> float:
    s = np.asarray(signal, np.float64)
    noise = float(np.sum((s - np.asarray(noisy, np.float64)) ** 2))
    power = float(np.sum(s**2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(power, 1e-30) / noise)


def sensitivity(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    candidates: list[str],
    feeds: list[dict[str, np.ndarray]],
    workdir: Path,
) -> list[dict[str, Any]]:
    """Per candidate node: SQNR of its input and output activation (float vs the QDQ model, matched by
    name, averaged over feeds) and the drop across it; most harmful first."""
    from tqdm import tqdm

    nodes = {n.name: n for n in float_model.graph.node}
    watched = {name: (nodes[name].input[0], nodes[name].output[0]) for name in candidates if name in nodes}
    tensors = sorted({t for pair in watched.values() for t in pair})
    float_sess = ort_session.session(onnx.load(str(_with_all_outputs(float_model, workdir / "float-all.onnx"))))
    quant_sess = ort_session.session(onnx.load(str(_with_all_outputs(quantized, workdir / "qdq-all.onnx"))))
    float_names = {_saved_name(o.name) for o in float_sess.get_outputs()}
    quant_names = {_saved_name(o.name) for o in quant_sess.get_outputs()}
    # In the QDQ model a float tensor keeps its name and holds what that model computes there (from
    # dequantized inputs and weights): matched by name with the float model's tensor.
    wanted = [t for t in tensors if t in float_names and t in quant_names]
    if not wanted:
        return []
    float_out = [_saved(t, float_sess) for t in wanted]
    quant_out = [_saved(t, quant_sess) for t in wanted]
    sums: dict[str, list[float]] = {t: [] for t in wanted}
    for feed in tqdm(feeds, desc="sensitivity", unit="img", disable=None, leave=False):
        ref = dict(zip(wanted, float_sess.run(float_out, feed), strict=True))
        got = dict(zip(wanted, quant_sess.run(quant_out, feed), strict=True))
        for t in wanted:
            sums[t].append(_sqnr_db(ref[t], got[t]))
    sqnr = {t: float(np.mean(v)) for t, v in sums.items()}
    rows = []
    for name, (inp, out) in watched.items():
        s_in, s_out = sqnr.get(inp, float("inf")), sqnr.get(out)
        if s_out is None:
            continue
        drop = min(s_in, EXACT_DB) - s_out  # a layer reading an exact input (the image) adds all its noise
        rows.append(
            {
                "node": name,
                "sqnr_in_db": s_in if np.isfinite(s_in) else None,  # None: an exact (float) input
                "sqnr_out_db": s_out if np.isfinite(s_out) else None,
                "sqnr_drop_db": float(drop) if np.isfinite(drop) else 0.0,
            }
        )
    rows.sort(key=lambda r: -r["sqnr_drop_db"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def map_loss(
    float_model: onnx.ModelProto,
    quant_model: onnx.ModelProto,
    data_yaml: Path,
    workdir: Path,
    float_map: float | None = None,
) -> tuple[float, float, float]:
    """(float mAP50-95, int8 mAP50-95, loss in points) on a labeled data.yaml's train split: the
    budget loop fits on it, so the val split (what reports judge) stays unseen."""
    from graphopt.eval.evaluate import evaluate

    if float_map is None:
        onnx.save_model(float_model, str(workdir / "eval-float.onnx"))
        float_map = evaluate(workdir / "eval-float.onnx", data_yaml, progress=False, split="train").map50_95
    onnx.save_model(quant_model, str(workdir / "eval-int8.onnx"))
    q_map = evaluate(workdir / "eval-int8.onnx", data_yaml, progress=False, split="train").map50_95
    return float_map, q_map, 100.0 * (float_map - q_map)


def fit_budget(
    quantize: Callable[[list[str]], onnx.ModelProto],
    order: list[str],
    budget: float,
    loss: Callable[[onnx.ModelProto], dict[str, Any]],
) -> tuple[list[str], list[dict[str, Any]]]:
    """Keep the first k of `order` float (k = 0, 1, 2, 4, …) until `loss(candidate)["loss"]` ≤ budget.
    Returns the layers kept float and every step measured."""
    steps: list[dict[str, Any]] = []
    k = 0
    while True:
        measured = loss(quantize(order[:k]))
        steps.append({"float_layers": k, **{key: v for key, v in measured.items() if key != "loss"}})
        if measured["loss"] <= budget:
            return order[:k], steps
        if k >= len(order):
            steps[-1]["budget_not_met"] = True  # the non-conv int8 ops (SiLU, Concat, …) alone exceed it
            return order[:k], steps
        k = 1 if k == 0 else min(2 * k, len(order))
