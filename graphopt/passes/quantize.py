"""`quantize`: int8 QDQ that keeps its detections.

- Static post-training quantization through onnxruntime's QDQ quantizer, calibrated on images
  from `--data` through the model's own preprocessing, one image at a time (graphopt.quantize.ort).
- The YOLO head's post-processing tail stays float, found structurally (graphopt.core.head): box
  coordinates in pixels and scores in 0-1 must never share one int8 scale — that is what makes
  library-default quantization return zero detections. By default the head's output convs stay
  float too: one tensor carries box, objectness and class logits of very different ranges
  (on YOLOv5n this alone was worth 0.8 mAP50-95 points).
- Activation ranges of least expected int8 error per tensor (graphopt.quantize.mse), and bias
  correction of the int8 weights' rounding (graphopt.quantize.bias_correction).
- `target=arm` (the Pi: S8S8, Arm dot-product kernels) or `target=x86` (U8S8, VNNI).
- Sensitivity, measured in one run (graphopt.quantize.sensitivity); with `budget`, the most
  sensitive layers return to float until the measured loss fits.
- Already-quantized (QAT) models pass through untouched.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx
import onnx_graphsurgeon as gs

from graphopt.core.errors import GraphoptError
from graphopt.core.graph import name_unnamed_nodes, shape_computation_nodes
from graphopt.core.head import FEATURE_OPS, find_head_tail
from graphopt.eval.head_error import head_error
from graphopt.passes.options import Options, option
from graphopt.passes.registry import PassContext, PassResult, register
from graphopt.quantize import ort as q
from graphopt.quantize import sensitivity as sens
from runtime import metadata as keys
from runtime.metadata import parse_metadata


@dataclass(frozen=True)
class QuantizeOptions(Options):
    mode: Literal["static", "dynamic"] = option("static", "dynamic: int8 weights, activations at run time")
    target: Literal["arm", "x86"] | None = option(None, "arm: S8S8 (Pi 5); x86: U8S8 [the recipe's, else arm]")
    # mse + bias_correction: on yolov5n at 640 (split.yaml) on the A76's kernels, the holdout int8 loss
    # went 1.27 -> 0.43 mAP50-95 points and the calibration half's 1.48 -> 0.52 (percentile 99.999 before)
    calibration: Literal["minmax", "percentile", "entropy", "mse"] = option(
        "mse", "activation range method (mse: per-tensor range of least expected int8 error)"
    )
    percentile: float = option(99.999, "for calibration=percentile", lo=0, hi=100, lo_open=True)
    # calibration streams (memory does not grow with samples); the bound is on time
    samples: int = option(64, "calibration images (unreadable ones are skipped and counted)", lo=1, hi=100_000)
    per_channel: bool = option(True, "per-channel weight scales")
    reduce_range: bool | None = option(
        None, "7-bit weights; none: for target=x86 on an x86 host without VNNI (its int8 sums saturate)"
    )
    exclude_head: bool = option(True, "keep the head's post-processing tail float")
    float_output_convs: bool = option(True, "keep the head's output convs float as well")
    # off by default: on yolov5n at 640 it moved holdout and calibration-half mAP in opposite
    # directions on the A76's kernels and on x86 (within the ±0.7 pt a 64-image half resolves)
    float_input_conv: bool = option(False, "keep the conv(s) reading the image float")
    exclude: list[str] = option([], "more node names to keep float")
    bias_correction: bool = option(
        True, "remove the mean shift int8 weight rounding puts on each conv output (ΔW·E[x])"
    )
    sensitivity: bool = option(False, "measure every layer's SQNR loss (implied by budget); table in --report")
    # every intermediate tensor of each of these images is held at once (onnxruntime's qdq_loss_debug)
    sensitivity_samples: int = option(
        4, "images the sensitivity and the score-error budget run on", lo=1, hi=64
    )
    budget: float | None = option(
        None, "max loss: mAP50-95 points (labeled data.yaml), else score-error points; none: off", lo=0, hi=100
    )


def _needs(options: QuantizeOptions) -> tuple[str, ...]:
    return ("calibration_data",) if options.mode == "static" else ()


@register("quantize", lossless=False, options=QuantizeOptions, requires=_needs)
def quantize(graph: gs.Graph, ctx: PassContext) -> PassResult:
    """int8 QDQ with calibration, automatic head exclusion and sensitivity-guided mixed precision."""
    opts: QuantizeOptions = ctx.options
    model = gs.export_onnx(graph, do_type_check=False)
    name_unnamed_nodes(model)
    graph = gs.import_onnx(model)
    existing = sum(n.op in ("QuantizeLinear", "DequantizeLinear") for n in graph.nodes)
    if existing:
        return PassResult(
            changed=False,
            notes=[f"already quantized ({existing} Q/DQ nodes, e.g. from QAT): not quantized twice"],
        )
    target = opts.target or ctx.target or "arm"
    float_nodes, reasons = _float_nodes(graph, opts)
    quantizable = [n.name for n in graph.nodes if n.op in FEATURE_OPS and n.name not in float_nodes]
    if not quantizable:
        raise GraphoptError("quantize: the model has no quantizable convolution or matmul outside the head")
    if opts.mode == "dynamic":
        out = q.dynamic_quantize(model, sorted(float_nodes), opts.per_channel)
        return _result(
            out,
            ["dynamic quantization: int8 weights, activations quantized at run time"] + reasons,
            {"mode": "dynamic", "float_nodes": sorted(float_nodes)},
        )
    return _static(model, graph, ctx, target, float_nodes, reasons, quantizable)


def _input_convs(graph: gs.Graph) -> list[gs.Node]:
    """The convs that read a graph input directly (the image, at full resolution)."""
    inputs = {t.name for t in graph.inputs}
    return [n for n in graph.nodes if n.op == "Conv" and n.inputs and n.inputs[0].name in inputs]


def _float_nodes(graph: gs.Graph, opts: QuantizeOptions) -> tuple[set[str], list[str]]:
    names = {n.name for n in graph.nodes}
    unknown = [n for n in opts.exclude if n not in names]
    if unknown:
        raise GraphoptError(f"quantize.exclude names unknown node(s): {', '.join(unknown[:5])}")
    keep: set[str] = set(opts.exclude)
    reasons = []
    shape_nodes = shape_computation_nodes(graph)
    if shape_nodes:
        keep |= {n.name for n in shape_nodes}
        reasons.append(
            f"{len(shape_nodes)} shape-computation node(s) stay float (Reshape targets, Resize sizes: "
            "rounding them would change tensor shapes; `simplify` folds most of them away)"
        )
    if opts.exclude_head:
        tail = find_head_tail(graph)
        keep |= {n.name for n in tail.nodes}
        reasons.append("head tail: " + tail.summary())
        if opts.float_output_convs and tail.output_convs:
            keep |= {n.name for n in tail.output_convs}
            reasons.append(
                f"{len(tail.output_convs)} output convs stay float: one tensor carries box, objectness "
                "and class logits of different ranges ("
                + ", ".join(n.name for n in tail.output_convs[:6])
                + ")"
            )
    if opts.float_input_conv:
        first = [n for n in _input_convs(graph) if n.name not in keep]
        if first:
            keep |= {n.name for n in first}
            reasons.append(
                f"{len(first)} input conv(s) stay float ({', '.join(n.name for n in first[:3])}): the layer "
                "most sensitive to int8 by SQNR, reading the image itself"
            )
    if opts.exclude:
        reasons.append(f"{len(opts.exclude)} node(s) kept float as asked (quantize.exclude)")
    return keep, reasons


def _static(
    model: onnx.ModelProto,
    graph: gs.Graph,
    ctx: PassContext,
    target: str,
    float_nodes: set[str],
    reasons: list[str],
    quantizable: list[str],
) -> PassResult:
    opts: QuantizeOptions = ctx.options
    feeds = ctx.feeds
    if feeds is None or not feeds.images:
        raise GraphoptError("quantize needs calibration images: pass --data FOLDER, IMAGE or data.yaml")
    meta = parse_metadata(ctx.metadata)
    inp = graph.inputs[0]
    hw = (
        tuple(int(d) for d in inp.shape[2:])
        if inp.shape and all(isinstance(d, int) for d in inp.shape[2:])
        else (meta.imgsz or (640, 640))
    )
    auto_range = target == "x86" and q.x86_without_vnni()
    reduce_range = opts.reduce_range if opts.reduce_range is not None else auto_range
    config = q.QuantConfig(
        target, opts.calibration, opts.per_channel, opts.percentile, sorted(float_nodes), reduce_range
    )
    percentile = opts.percentile if opts.calibration == "percentile" else None  # the one that applied
    details: dict[str, Any] = {
        "mode": "static",
        "target": target,
        "types": q.TARGET_TYPES[target],
        "calibration": opts.calibration,
        "percentile": percentile,
        "per_channel": opts.per_channel,
        "reduce_range": reduce_range,
    }
    details["calibration_memory_estimate_mb"] = round(q.check_memory(model) / 2**20)
    with tempfile.TemporaryDirectory(prefix="graphopt-quant-") as tmp:
        work = Path(tmp)
        quantizer = q.Quantizer(model, config, work)
        stream = feeds.image_stream(hw, meta.preprocess, opts.samples)
        reader = q.ImageReader(inp.name, iter(stream), min(opts.samples, len(feeds.images)), "calibration")
        try:
            quantizer.calibrate(reader)
        except ValueError:
            if reader.used:
                raise
        q.require_images(reader.used, stream.reasons, opts.samples)
        details.update(calibration_images=reader.used, unreadable_images=stream.skipped)
        notes = [
            f"{opts.calibration}{'' if percentile is None else f' {percentile}'} calibration on {reader.used} image(s)"
            + (f", {len(stream.skipped)} unreadable skipped" if stream.skipped else "")
        ] + reasons
        if opts.bias_correction:
            from graphopt.quantize.bias_correction import conv_input_means

            with q.stage("quantize: conv input means for bias correction"):
                quantizer.bias_means = conv_input_means(
                    model, iter(feeds.image_stream(hw, meta.preprocess, opts.samples)), set(quantizable)
                )
        if reduce_range:
            notes.append(
                "7-bit weights (reduce_range)"
                + (": this x86 host has no VNNI, and its u8·s8 kernels saturate 8-bit weights" if opts.reduce_range is None else "")
            )
        extra_float: list[str] = []
        if opts.sensitivity or opts.budget is not None:
            extra_float, steps, table = _mixed_precision(model, quantizer, ctx, hw, meta, quantizable, work)
            details.update(sensitivity=table, budget_steps=steps)
            if extra_float:
                notes.append(
                    f"mixed precision: {len(extra_float)} most sensitive layer(s) kept float "
                    f"to fit the budget ({', '.join(extra_float[:5])})"
                )
            if steps and steps[-1].get("budget_not_met"):
                notes.append(
                    f"budget {opts.budget} not met even with every conv float: the remaining "
                    "int8 ops (activations, concats) alone cost more"
                )
        with q.stage("quantize: inserting QDQ nodes"):
            out = quantizer.quantize(exclude=extra_float)
        if quantizer.bias_correction is not None:
            fix = quantizer.bias_correction
            details["bias_correction"] = {"convs": fix.convs, "max_shift": round(fix.max_shift, 6)}
            notes.append(
                f"bias correction: the mean shift of int8 weight rounding (ΔW·E[x], E[x] on the "
                f"calibration images) removed from {fix.convs} conv bias(es), largest {fix.max_shift:.3g}"
            )
    details["float_nodes"] = sorted(float_nodes | set(extra_float))
    return _result(out, notes, details)


def _mixed_precision(
    model: onnx.ModelProto,
    quantizer: q.Quantizer,
    ctx: PassContext,
    hw: tuple[int, int],
    meta: Any,
    quantizable: list[str],
    work: Path,
) -> tuple[list[str], list[dict], list[dict]]:
    opts: QuantizeOptions = ctx.options
    head = meta.head
    if head not in ("yolov5", "anchor-free"):
        raise GraphoptError("quantize sensitivity needs to know the head format (graphopt.head metadata)")
    output = meta.main_output or model.graph.output[0].name
    input_name = model.graph.input[0].name
    feeds = [
        {input_name: t} for t in ctx.feeds.image_stream(hw, meta.preprocess, opts.sensitivity_samples)
    ]
    table = sens.sensitivity(model, quantizer.quantize(), quantizable, feeds, work)
    if opts.budget is None:
        return [], [], table
    data_yaml = ctx.feeds.labeled_yaml
    reference = sens.run_outputs(model, feeds, output)
    cache: dict[str, float] = {}

    def loss(candidate: onnx.ModelProto) -> dict[str, Any]:
        if data_yaml is not None:
            float_map, q_map, points = sens.map_loss(model, candidate, data_yaml, work, cache.get("float"))
            cache["float"] = float_map
            return {
                "loss": points,
                "loss_map50_95_points": points,
                "int8_map50_95": q_map,
                "float_map50_95": float_map,
            }
        points = 100.0 * head_error(reference, sens.run_outputs(candidate, feeds, output), head).score_error
        return {"loss": points, "loss_score_points": points}

    order = [row["node"] for row in table]
    groups = _with_activations(model)

    def quantize_with(floats: list[str]) -> onnx.ModelProto:
        return quantizer.quantize(exclude=[n for f in floats for n in groups.get(f, [f])])

    kept, steps = sens.fit_budget(quantize_with, order, opts.budget, loss)
    return [n for f in kept for n in groups.get(f, [f])], steps, table


ACTIVATIONS = {"Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Mish", "Softplus"}


def _with_activations(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Each conv with the activation that reads its output (SiLU's Sigmoid and Mul included): a layer
    returns to float as a whole, or its int8 activation re-quantizes what the float conv kept."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in FEATURE_OPS:
            continue
        members = [node.name]
        readers = consumers.get(node.output[0], [])
        sigmoid = [r for r in readers if r.op_type == "Sigmoid"]
        for r in readers:
            if r.op_type in ACTIVATIONS:
                members.append(r.name)
            elif r.op_type == "Mul" and sigmoid and any(s.output[0] in r.input for s in sigmoid):
                members.append(r.name)  # x * sigmoid(x): SiLU
        groups[node.name] = members
    return groups


def _result(model: onnx.ModelProto, notes: list[str], details: dict[str, Any]) -> PassResult:
    counts = {
        op: sum(n.op_type == op for n in model.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")
    }
    details["qdq_nodes"] = counts
    return PassResult(
        changed=True,
        notes=notes,
        details=details,
        graph=gs.import_onnx(model),
        metadata={keys.PREFIX + "quantized": {k: details.get(k) for k in ("mode", "target", "calibration")}},
    )
