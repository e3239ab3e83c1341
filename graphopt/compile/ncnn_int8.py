"""NCNN int8 for the Pi: which layers go int8, the int8 `.param/.bin` written by our own code, and its check.

From an ONNX model: pnnx writes the fp32 NCNN model (verified against onnxruntime by
`convert_to_ncnn`), graphopt calibrates it (graphopt.compile.ncnn_calibrate), chooses the layers
(`decide_layers`), writes the int8 pair (graphopt.compile.ncnn_format), checks its layout and then
its outputs against the fp32 NCNN model on calibration images. Only a pair that passes both checks
reaches the output folder; no ncnn tool (ncnn2table, ncnn2int8) is needed.

Where int8 pays on NCNN: an int8 Convolution quantizes its input, runs the integer kernel and
dequantizes with its fused activation (ReLU, LeakyReLU, Clip, Sigmoid, Mish, HardSwish); it hands
int8 straight to the next conv when requantize is fused (conv → conv, or conv → Split → convs). NCNN
does not fuse Swish/SiLU: a conv followed by Swish pays a dequantize to float and a quantize back
for every layer, which is why yolov5/yolov8 int8 on NCNN is often slower than fp16 (ncnn#5443). So
`mixed` (the default) keeps such convs fp16 and says so per layer; `all` quantizes every conv but the
head's output convs, which stay float with everything after them (as `quantize` keeps them).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.compile.ncnn_calibrate import METHODS, Calibrator, quantize_weights, weight_scales
from graphopt.compile.ncnn_format import (
    CONV_TYPES,
    FUSED_ACTIVATIONS,
    NcnnFormatError,
    NcnnLayer,
    NcnnModel,
    bin_bytes,
    check_files,
    param_text,
    read_model,
)
from graphopt.core.errors import GraphoptError, VerificationError
from graphopt.core.fileio import atomic_write

MODES = ("mixed", "all")
CHOICES = (*METHODS, "auto")  # auto: both tables, the one whose model agrees best with fp32 is kept
DEFAULT_SAMPLES = 64  # calibration images, as `quantize`
VERIFY_IMAGES = 4
# The int8 model against its own fp32 NCNN model on calibration images. An int8 detector that keeps
# its head float agrees to cosine ≥ 0.999 in practice; a wrong scale or layout gives ≪ 0.99.
MIN_COSINE = 0.99
MAX_SCORE_ERROR = 0.1  # mean |Δ best class score| on the anchors the fp32 model finds confident (Yolo-Fastest KL: 0.055)
MAX_BOX_ERROR_PX = 8.0  # mean |Δ xywh| of those anchors, input pixels (Yolo-Fastest KL: 2.5)


class NoInt8Layer(GraphoptError):
    """`mixed` found no conv where int8 pays on NCNN (e.g. every conv is followed by Swish)."""

    def __init__(self, message: str, decisions: list[LayerDecision]) -> None:
        super().__init__(message)
        self.decisions = decisions


@dataclass
class LayerDecision:
    layer: str
    type: str
    activation: str
    int8: bool
    reason: str
    requantize: bool = False
    rule: str = ""  # the reason's kind, for summaries: head | swish | no-fusion | fused | feeds-int8 | all | dynamic

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _next_layers(model: NcnnModel, layer: NcnnLayer) -> list[NcnnLayer]:
    """The layers reading `layer`'s output, looking through Split (NCNN's fan-out)."""
    consumers = model.consumers()
    out: list[NcnnLayer] = []
    for top in layer.tops:
        for c in consumers.get(top, []):
            out += _next_layers(model, c) if c.type == "Split" else [c]
    return out


def _silu_as_mul(model: NcnnModel, layer: NcnnLayer) -> bool:
    """x·sigmoid(x) spelled out (Sigmoid, then a BinaryOp multiply reading x too): Swish by another name."""
    nxt = _next_layers(model, layer)
    consumers = model.consumers()
    muls = {n.name for n in nxt if n.type == "BinaryOp" and n.geti(0, 0) == 2}
    return any(
        c.name in muls for n in nxt if n.type == "Sigmoid" for t in n.tops for c in _through_split(consumers, t)
    )


def _through_split(consumers: dict[str, list[NcnnLayer]], blob: str) -> list[NcnnLayer]:
    out: list[NcnnLayer] = []
    for c in consumers.get(blob, []):
        out += [x for t in c.tops for x in _through_split(consumers, t)] if c.type == "Split" else [c]
    return out


def _output_convs(model: NcnnModel) -> set[str]:
    """Convs with no conv after them: the head's output convs (what follows them is the decode)."""
    consumers = model.consumers()
    reaches_conv: dict[str, bool] = {}
    for layer in reversed(model.layers):  # .param order is topological
        reaches_conv[layer.name] = any(
            c.type in CONV_TYPES or reaches_conv.get(c.name, False) for t in layer.tops for c in consumers.get(t, [])
        )
    return {x.name for x in model.layers if x.type in CONV_TYPES and not reaches_conv[x.name]}


def decide_layers(model: NcnnModel, mode: str) -> list[LayerDecision]:
    """One decision per Convolution/ConvolutionDepthWise: int8 or float, and why."""
    if mode not in MODES:
        raise GraphoptError(f"--int8 {mode}: expected one of {', '.join(MODES)}")
    heads = _output_convs(model)
    decisions: dict[str, LayerDecision] = {}
    for layer in model.layers:
        if layer.type not in CONV_TYPES:
            continue
        act_id = layer.geti(9, 0)
        act = FUSED_ACTIVATIONS.get(act_id, "none" if act_id == 0 else f"type {act_id}")
        d = LayerDecision(layer.name, layer.type, act, False, "")
        if layer.geti(8, 0):
            raise GraphoptError(f"layer {layer.name} is int8 already (8={layer.geti(8)}); convert a float model")
        if layer.geti(19, 0):
            d.reason, d.rule = "dynamic weights (a second input): not quantizable", "dynamic"
        elif layer.name in heads:
            d.reason, d.rule = "head output conv: it and everything after stay float (as quantize keeps them)", "head"
        elif mode == "all":
            d.int8, d.reason, d.rule = True, "--int8 all", "all"
        elif act_id in FUSED_ACTIVATIONS:
            d.int8, d.reason, d.rule = True, f"{act} fuses into the int8 conv", "fused"
        decisions[layer.name] = d
    if mode == "mixed":  # a conv without activation pays where its int8 output feeds int8 convs
        changed = True
        while changed:
            changed = False
            for layer in model.layers:
                d = decisions.get(layer.name)
                if d is None or d.int8 or d.reason:
                    continue
                nxt = _next_layers(model, layer)
                if nxt and all(decisions.get(n.name) is not None and decisions[n.name].int8 for n in nxt):
                    d.int8, d.reason, d.rule = True, "feeds int8 conv(s) only: requantize fused", "feeds-int8"
                    changed = True
        for layer in model.layers:
            d = decisions.get(layer.name)
            if d is None or d.reason:
                continue
            kinds = sorted({n.type for n in _next_layers(model, layer)}) or ["the output"]
            if "Swish" in kinds or _silu_as_mul(model, layer):
                d.rule = "swish"
                d.reason = (
                    "followed by Swish (SiLU), which NCNN does not fuse into an int8 conv: int8 would dequantize "
                    "to float and back around it (kept fp16)"
                )
            else:
                d.rule = "no-fusion"
                d.reason = f"no fused activation and its output goes to {', '.join(kinds)}, not int8 convs (kept fp16)"
    for layer in model.layers:  # requantize: an int8 conv whose every reader is an int8 conv of one input
        d = decisions.get(layer.name)
        if d is None or not d.int8:
            continue
        nxt = _next_layers(model, layer)
        d.requantize = bool(nxt) and all(
            n.name in decisions and decisions[n.name].int8 and len(n.bottoms) == 1 for n in nxt
        )
    return list(decisions.values())


def _source_blob(model: NcnnModel, blob: str) -> str:
    """The blob a Split top copies (the calibration statistic is the same for all copies)."""
    producer = model.producer()
    while blob in producer and producer[blob].type == "Split":
        blob = producer[blob].bottoms[0]
    return blob


def apply_int8(model: NcnnModel, decisions: list[LayerDecision], blob_scales: dict[str, float]) -> set[str]:
    """Turn the chosen layers int8 in place (weights rounded, scale arrays appended); their names."""
    by_name = {x.name: x for x in model.layers}
    chosen = {d.layer for d in decisions if d.int8}
    for d in decisions:
        if not d.int8:
            continue
        layer = by_name[d.layer]
        scales = weight_scales(layer)
        bottom = blob_scales[_source_blob(model, layer.bottoms[0])]
        layer.arrays[0] = quantize_weights(layer, scales)
        layer.arrays += [scales, np.array([bottom], np.float32)]
        term = 2 if layer.type == "Convolution" else 1
        if d.requantize:
            top = blob_scales[_source_blob(model, layer.tops[0])]
            layer.arrays.append(np.array([top], np.float32))
            term += 100
        layer.set(8, str(term))
    return chosen


def int8_blobs(model: NcnnModel, decisions: list[LayerDecision]) -> list[str]:
    """Every blob whose scale the chosen layers need, in layer order (extract continues forward)."""
    by_name = {x.name: x for x in model.layers}
    need: set[str] = set()
    for d in decisions:
        if d.int8:
            layer = by_name[d.layer]
            need.add(_source_blob(model, layer.bottoms[0]))
            if d.requantize:
                need.add(_source_blob(model, layer.tops[0]))
    order = [t for x in model.layers for t in x.tops]
    return [b for b in order if b in need]


def _images(data: str | Path, preprocess: dict[str, Any] | None, hw: tuple[int, int], count: int) -> list[np.ndarray]:
    from graphopt.data.feeds import FeedSource, none_readable

    source = FeedSource(data)
    stream = source.image_stream(hw, preprocess, count)
    images = [x for x in stream]
    if not images:
        raise GraphoptError(none_readable(source.data, stream))
    return images


def _verify(fp32_dir: Path, int8_dir: Path, images: list[np.ndarray], head: str | None) -> dict[str, Any]:
    """The int8 pair against its fp32 NCNN model, through the runtime's backend, on the same images."""
    from graphopt.core.compare import cosine
    from graphopt.eval.head_error import head_error
    from runtime.backends import NcnnBackend

    ref_net, got_net = NcnnBackend(fp32_dir, threads=2), NcnnBackend(int8_dir, threads=2)
    name = ref_net.output_names[0]
    ref = [ref_net.run(x)[name] for x in images]
    got = [got_net.run(x)[name] for x in images]
    result: dict[str, Any] = {"images": len(images), "cosine": cosine(ref, got)}
    if head in ("yolov5", "anchor-free"):
        err = head_error(ref, got, head)
        result.update(score_error=err.score_error, box_error_px=err.box_error_px)
    problems = []
    if not result["cosine"] >= MIN_COSINE:
        problems.append(f"cosine {result['cosine']:.4f} < {MIN_COSINE}")
    if result.get("score_error", 0.0) > MAX_SCORE_ERROR:
        problems.append(f"mean score error {result['score_error']:.3f} > {MAX_SCORE_ERROR}")
    if result.get("box_error_px", 0.0) > MAX_BOX_ERROR_PX:
        problems.append(f"mean box error {result['box_error_px']:.2f} px > {MAX_BOX_ERROR_PX}")
    result["problems"] = problems
    return result


def _agreement(check: dict[str, Any]) -> float:
    """Lower is closer to the fp32 model: the score error where the head is known, else 1 - cosine."""
    return float(check.get("score_error", 1.0 - check["cosine"]))


def write_int8(
    fp32_param: Path,
    out_dir: Path,
    stem: str,
    data: str | Path,
    mode: str = "mixed",
    method: str = "auto",
    samples: int = DEFAULT_SAMPLES,
    threads: int = 2,
) -> dict[str, Any]:
    """fp32 NCNN pair (+ its sidecar) → the int8 pair `out_dir/stem.ncnn.{param,bin,json}`, checked.

    `out_dir` must already be checked as an output folder; files are written atomically, the
    .param last (a folder with it is complete)."""
    from runtime.backends import ncnn_files
    from runtime.files import FileProblem, read_text
    from runtime.metadata import parse_metadata

    if method not in CHOICES:
        raise GraphoptError(f"--calibration {method}: expected one of {', '.join(CHOICES)}")
    if not 1 <= samples <= 100_000:
        raise GraphoptError(f"--samples {samples}: expected 1..100000 calibration images")
    param, weights, sidecar_path = ncnn_files(fp32_param)
    try:
        sidecar = json.loads(read_text(sidecar_path, "NCNN sidecar (.json)"))
        shape = [int(d) for d in sidecar["inputs"][0]["shape"]]
        input_blob = str(sidecar["inputs"][0]["name"])
        raw_meta = dict(sidecar.get("metadata") or {})
    except FileProblem as exc:
        raise GraphoptError(str(exc)) from None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise GraphoptError(f"{sidecar_path}: not the sidecar `convert` writes ({type(exc).__name__}: {exc})") from None
    if len(shape) != 4:
        raise GraphoptError(f"{sidecar_path}: input shape {shape} is not [1, 3, H, W]")
    model = read_model(param, weights)
    decisions = decide_layers(model, mode)
    if not any(d.int8 for d in decisions):
        summary = decision_summary([d.as_dict() for d in decisions])
        raise NoInt8Layer(f"no conv of this model pays in int8 on NCNN ({summary}); use --int8 all to force it", decisions)
    meta = parse_metadata({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw_meta.items()})
    images = _images(data, meta.preprocess, (shape[2], shape[3]), samples)
    blobs = int8_blobs(model, decisions)
    calib = Calibrator(str(param), str(weights), input_blob, blobs, threads)
    calib.absmax_pass(images)
    methods = list(METHODS) if method == "auto" else [method]
    if "kl" in methods:
        calib.histogram_pass(images)
    int8_sidecar = dict(sidecar)
    int8_sidecar["fp16"] = True  # what is not int8 is stored (and, on the Pi, computed) in fp16
    with tempfile.TemporaryDirectory(prefix="graphopt-ncnn-int8-") as tmp:
        candidates = {}
        for m in methods:  # `auto`: both tables, measured against each other on the calibration images
            folder = Path(tmp) / m
            folder.mkdir()
            candidate = read_model(param, weights)
            chosen = apply_int8(candidate, decisions, calib.scales(m))
            staged = {k: folder / f"{stem}.ncnn.{k}" for k in ("param", "bin", "json")}
            staged["param"].write_text(param_text(candidate))
            staged["bin"].write_bytes(bin_bytes(candidate, chosen))
            staged["json"].write_text(json.dumps(int8_sidecar, indent=2, default=str) + "\n")
            layout = check_files(staged["param"], staged["bin"])
            if layout["int8_layers"] != len(chosen):
                raise NcnnFormatError(
                    f"{staged['param']}: {layout['int8_layers']} int8 layers written, {len(chosen)} chosen"
                )
            candidates[m] = (staged, chosen, _verify(param.parent, folder, images[:VERIFY_IMAGES], meta.head))
        method = min(candidates, key=lambda m: (bool(candidates[m][2]["problems"]), _agreement(candidates[m][2])))
        staged, chosen, check = candidates[method]
        if check["problems"]:
            raise VerificationError(
                f"NCNN int8 ({method}) differs from its fp32 model on {check['images']} calibration images "
                f"({'; '.join(check['problems'])}); nothing was written"
            )
        int8_sidecar["int8"] = {
            "mode": mode,
            "calibration": method,
            "calibration_compared": {m: c[2] for m, c in candidates.items()} if len(candidates) > 1 else None,
            "calibration_images": len(images),
            "int8_layers": len(chosen),
            "conv_layers": len(decisions),
            "requantize_fused": sum(d.requantize for d in decisions),
            "writer": "graphopt (ncnn2int8 layout: int8 convs, fp16 elsewhere)",
            "verified": check,
            "layers": [d.as_dict() for d in decisions],  # what was kept float and why
        }
        staged["json"].write_text(json.dumps(int8_sidecar, indent=2, default=str) + "\n")
        finals = {k: out_dir / p.name for k, p in staged.items()}
        for kind in ("bin", "json", "param"):
            atomic_write(finals[kind], lambda t, k=kind: shutil.copyfile(staged[k], t), f"NCNN .{kind} file")
    return {
        "param": str(finals["param"]),
        "bin": str(finals["bin"]),
        "sidecar": str(finals["json"]),
        "bin_bytes": finals["bin"].stat().st_size,
        "mode": mode,
        "calibration": method,
        "calibration_compared": int8_sidecar["int8"]["calibration_compared"],
        "calibration_images": len(images),
        "int8_layers": len(chosen),
        "conv_layers": len(decisions),
        "requantize_fused": sum(d.requantize for d in decisions),
        "verified": check,
        "layers": [d.as_dict() for d in decisions],
    }


def convert_to_ncnn_int8(
    model_path: str | Path,
    out_dir: str | Path,
    data: str | Path,
    mode: str = "mixed",
    method: str = "auto",
    samples: int = DEFAULT_SAMPLES,
    verify_image: str | Path | None = None,
) -> dict[str, Any]:
    """ONNX → fp32 NCNN (pnnx, verified against onnxruntime) → int8 NCNN in `out_dir`, checked."""
    from graphopt.compile.ncnn import convert_to_ncnn
    from runtime.files import FileProblem, check_output, output_dir

    if mode not in MODES:
        raise GraphoptError(f"--int8 {mode}: expected one of {', '.join(MODES)}")
    if method not in CHOICES:
        raise GraphoptError(f"--calibration {method}: expected one of {', '.join(CHOICES)}")
    src, out = Path(model_path), Path(out_dir)
    stem = src.name.removesuffix(".onnx")
    try:  # every output is checked before any work
        output_dir(out, "output folder")
        for kind in ("param", "bin", "json"):
            check_output(out / f"{stem}.ncnn.{kind}", f"NCNN .{kind} file")
    except FileProblem as exc:
        raise GraphoptError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="graphopt-ncnn-fp32-") as tmp:
        fp32 = convert_to_ncnn(src, tmp, fp16=False, verify_image=verify_image)
        result = write_int8(Path(fp32["param"]), out, stem, data, mode, method, samples)
        result["fp32_bin_bytes"] = Path(fp32["bin"]).stat().st_size
    result["output"] = str(out)
    result["fp32_vs_onnxruntime"] = {k: fp32[k] for k in ("verified_on", "max_abs_diff", "max_rel_to_range")}
    return result


RULES_KEPT = {
    "head": "head output convs",
    "swish": "followed by Swish (not fused by NCNN)",
    "no-fusion": "no fused activation, output not to int8 convs",
    "dynamic": "dynamic weights",
}


def decision_summary(layers: list[dict[str, Any]]) -> str:
    """One line for reports: how many convs went int8, and why the others were kept."""
    kept: dict[str, int] = {}
    for d in layers:
        if not d["int8"]:
            kept[d["rule"]] = kept.get(d["rule"], 0) + 1
    int8 = sum(d["int8"] for d in layers)
    parts = ", ".join(f"{n} {RULES_KEPT.get(rule, rule)}" for rule, n in sorted(kept.items(), key=lambda kv: -kv[1]))
    return f"{int8} of {len(layers)} convs int8" + (f"; kept float: {parts}" if parts else "")
