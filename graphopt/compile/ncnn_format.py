"""NCNN's `.param`/`.bin` pair as data: read a model's layers and weights, write it back, check its layout.

The `.bin` has no index: each layer's `load_model` reads its arrays in order, so the layout follows
from the `.param` alone (ncnn's `src/layer/*.cpp` and `src/modelbin.cpp`). A *tagged* array (ncnn's
`mb.load(n, 0)`: conv weights) starts with a 4-byte tag — 0: fp32, 0x01306B47: fp16, 0x000D4B38:
int8 — and fp16/int8 payloads are padded to 4 bytes; a *raw* array (`mb.load(n, 1)`: biases, scales,
MemoryData) is plain fp32. The layer types below are those whose arrays we know; a model with
another weighted layer is refused rather than misread.

An int8 Convolution (`8=2`) holds after its weights and bias `num_output` weight scales and one input
(bottom blob) scale; a depthwise/grouped ConvolutionDepthWise (`8=1`) `group` weight scales and one
input scale; `8=` + 100 fuses a requantize and one output (top blob) scale follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphopt.core.errors import GraphoptError
from graphopt.core.fileio import read_bytes, read_text

MAGIC = "7767517"
TAG_FP32 = 0
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
# ncnn's fused activations (`9=` of Convolution/ConvolutionDepthWise); Swish/SiLU is not among them.
FUSED_ACTIVATIONS = {1: "ReLU", 2: "LeakyReLU", 3: "Clip", 4: "Sigmoid", 5: "Mish", 6: "HardSwish"}
CONV_TYPES = ("Convolution", "ConvolutionDepthWise")
# Layers that read nothing from the .bin (the ones pnnx writes for detectors, and common others).
WEIGHTLESS = frozenset(
    ["Input", "Split", "Concat", "BinaryOp", "UnaryOp", "Sigmoid", "Swish", "ReLU", "Clip", "TanH", "Mish", "HardSigmoid", "HardSwish", "ELU", "SELU", "GELU", "Pooling", "Pooling1D", "Interp", "Reshape", "Permute", "Slice", "Crop", "Flatten", "Softmax", "Eltwise", "Padding", "Noop", "ShuffleChannel", "Squeeze", "ExpandDims", "Tile", "Dropout", "Reduction", "Cast", "PixelShuffle", "Reorg", "Exp", "Log", "Power", "Threshold", "AbsVal", "BNLL", "ArgMax", "Dequantize", "Quantize", "Requantize", "Packing", "Yolov3DetectionOutput"]
)
MAX_PARAM_LINES = 100_000  # a detector has hundreds of layers; more is not a model's .param


class NcnnFormatError(GraphoptError):
    """A .param/.bin pair that does not have the layout its layers imply."""


@dataclass
class NcnnLayer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: list[tuple[int, str]]  # in file order, values as written (arrays keep their `-233xx=n,…` form)
    arrays: list[np.ndarray] = field(default_factory=list)  # the .bin arrays, as fp32

    def get(self, key: int, default: float | None = None) -> float:
        for k, v in self.params:
            if k == key:
                return float(v)
        if default is None:
            raise NcnnFormatError(f"layer {self.name} ({self.type}): no parameter {key}")
        return default

    def geti(self, key: int, default: int | None = None) -> int:
        return int(self.get(key, None if default is None else float(default)))

    def set(self, key: int, value: str) -> None:
        self.params = [(k, v) for k, v in self.params if k != key] + [(key, value)]


@dataclass
class NcnnModel:
    layers: list[NcnnLayer]
    blob_count: int

    def producer(self) -> dict[str, NcnnLayer]:
        return {t: layer for layer in self.layers for t in layer.tops}

    def consumers(self) -> dict[str, list[NcnnLayer]]:
        out: dict[str, list[NcnnLayer]] = {}
        for layer in self.layers:
            for b in layer.bottoms:
                out.setdefault(b, []).append(layer)
        return out


def read_param(path: Path) -> NcnnModel:
    # size-capped before it is read: a hostile .param is refused before it is held in memory
    text = read_text(path, "NCNN .param file").splitlines()
    if len(text) < 2 or text[0].strip() != MAGIC:
        raise NcnnFormatError(f"{path}: not an NCNN .param file (no {MAGIC} magic line)")
    if len(text) > MAX_PARAM_LINES:
        raise NcnnFormatError(f"{path}: {len(text)} lines, above the {MAX_PARAM_LINES} limit")
    try:
        layer_count, blob_count = (int(v) for v in text[1].split())
        layers = []
        for line in text[2:]:
            tok = line.split()
            if not tok:
                continue
            kind, name, nb, nt = tok[0], tok[1], int(tok[2]), int(tok[3])
            bottoms, tops = tok[4 : 4 + nb], tok[4 + nb : 4 + nb + nt]
            params = []
            for kv in tok[4 + nb + nt :]:
                k, v = kv.split("=", 1)
                params.append((int(k), v))
            layers.append(NcnnLayer(kind, name, bottoms, tops, params))
    except (ValueError, IndexError) as exc:
        raise NcnnFormatError(f"{path}: malformed NCNN .param ({exc})") from None
    if len(layers) != layer_count:
        raise NcnnFormatError(f"{path}: header says {layer_count} layers, the file has {len(layers)}")
    return NcnnModel(layers, blob_count)


def param_text(model: NcnnModel) -> str:
    lines = [MAGIC, f"{len(model.layers)} {model.blob_count}"]
    for layer in model.layers:
        params = " ".join(f"{k}={v}" for k, v in layer.params)
        lines.append(
            f"{layer.type:<24} {layer.name:<24} {len(layer.bottoms)} {len(layer.tops)} "
            + " ".join(layer.bottoms + layer.tops + ([params] if params else []))
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ArraySpec:
    count: int
    tagged: bool  # mb.load(n, 0): a tag precedes it; else raw fp32
    role: str  # weight | bias | weight_scales | bottom_scale | top_scale | data


def array_specs(layer: NcnnLayer) -> list[ArraySpec]:
    """What `layer.load_model` reads from the .bin, in order (ncnn's src/layer/*.cpp)."""
    t = layer.type
    if t in WEIGHTLESS:
        return []
    if t in CONV_TYPES or t in ("Deconvolution", "DeconvolutionDepthWise"):
        if layer.geti(19, 0):  # dynamic weight: the weights come in as a second input
            return []
        num_output, size = layer.geti(0), layer.geti(6)
        specs = [ArraySpec(size, True, "weight")]
        if layer.geti(5, 0):
            specs.append(ArraySpec(num_output, False, "bias"))
        term = layer.geti(8, 0) if t in CONV_TYPES else 0
        if term:
            # Convolution: one per output channel; ConvolutionDepthWise: per group (8=1) or one (8=2)
            n = num_output if t == "Convolution" else layer.geti(7, 1) if term in (1, 101) else 1
            specs += [ArraySpec(n, False, "weight_scales"), ArraySpec(1, False, "bottom_scale")]
            if term > 100:
                specs.append(ArraySpec(1, False, "top_scale"))
        return specs
    if t == "InnerProduct":
        specs = [ArraySpec(layer.geti(2), True, "weight")]
        if layer.geti(1, 0):
            specs.append(ArraySpec(layer.geti(0), False, "bias"))
        if layer.geti(8, 0):
            specs += [ArraySpec(layer.geti(0), False, "weight_scales"), ArraySpec(1, False, "bottom_scale")]
        return specs
    if t == "MemoryData":
        dims = [layer.geti(k, 0) for k in (0, 1, 11, 2)]
        count = int(np.prod([d for d in dims if d > 0])) if any(dims) else 1
        return [ArraySpec(count, layer.geti(21, 1) == 0, "data")]
    if t == "BatchNorm":
        return [ArraySpec(layer.geti(0), False, r) for r in ("slope", "mean", "var", "bias")]
    if t == "PReLU":
        return [ArraySpec(layer.geti(0, 1), False, "slope")]
    if t == "Scale":
        size = layer.geti(0, 0)
        if size == -233:
            return []
        return [ArraySpec(size, False, "scale")] + ([ArraySpec(size, False, "bias")] if layer.geti(1, 0) else [])
    raise NcnnFormatError(
        f"layer {layer.name}: NCNN layer type {t} is not one graphopt's NCNN int8 writer can read weights of"
    )


def _aligned(n: int) -> int:
    return (n + 3) // 4 * 4


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.off, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.off + n > len(self.data):
            raise NcnnFormatError(
                f"{self.path}: ends at byte {len(self.data)} inside {what} (needs {self.off + n}); "
                "the .bin does not hold what the .param says"
            )
        chunk = self.data[self.off : self.off + n]
        self.off += n
        return chunk

    def array(self, spec: ArraySpec, what: str) -> tuple[np.ndarray, int]:
        """(values as fp32, the tag or -1 for raw)."""
        if not spec.tagged:
            return np.frombuffer(self.take(4 * spec.count, what), "<f4").astype(np.float32), -1
        tag = int(np.frombuffer(self.take(4, what), "<u4")[0])
        if tag == TAG_FP32:
            return np.frombuffer(self.take(4 * spec.count, what), "<f4").astype(np.float32), tag
        if tag == TAG_FP16:
            raw = self.take(_aligned(2 * spec.count), what)
            return np.frombuffer(raw[: 2 * spec.count], "<f2").astype(np.float32), tag
        if tag == TAG_INT8:
            raw = self.take(_aligned(spec.count), what)
            return np.frombuffer(raw[: spec.count], np.int8).astype(np.float32), tag
        raise NcnnFormatError(
            f"{self.path}: {what} at byte {self.off - 4} has tag {tag:#010x}, none of fp32/fp16/int8 "
            "(the arrays before it do not have the sizes the .param says)"
        )


def read_model(param: Path, weights: Path) -> NcnnModel:
    """The layers of `param` with their arrays from `weights` (as fp32, int8 values unscaled)."""
    model = read_param(param)
    reader = _Reader(read_bytes(weights, "NCNN .bin file"), weights)
    for layer in model.layers:
        for spec in array_specs(layer):
            values, _ = reader.array(spec, f"layer {layer.name}'s {spec.role}")
            layer.arrays.append(values)
    if reader.off != len(reader.data):
        raise NcnnFormatError(f"{weights}: {len(reader.data) - reader.off} bytes left after the last layer's arrays")
    return model


def _tagged(values: np.ndarray, tag: int) -> bytes:
    if tag == TAG_INT8:
        payload = values.astype(np.int8).tobytes()
    elif tag == TAG_FP16:
        payload = values.astype("<f2").tobytes()
    else:
        payload = values.astype("<f4").tobytes()
    return np.uint32(tag).astype("<u4").tobytes() + payload + b"\0" * (_aligned(len(payload)) - len(payload))


def bin_bytes(model: NcnnModel, int8_layers: set[str], float_tag: int = TAG_FP16) -> bytes:
    """The .bin for `model`: `int8_layers`' weights as int8 (their arrays hold the rounded values),
    every other tagged array as `float_tag` (fp16, as ncnn2int8 stores what it does not quantize;
    TAG_FP32 writes an fp32 model), raw arrays fp32."""
    out = bytearray()
    for layer in model.layers:
        specs = array_specs(layer)
        if len(specs) != len(layer.arrays):
            raise NcnnFormatError(f"layer {layer.name}: {len(layer.arrays)} arrays for {len(specs)} in its layout")
        for spec, values in zip(specs, layer.arrays, strict=True):
            if values.size != spec.count:
                raise NcnnFormatError(f"layer {layer.name}: {spec.role} has {values.size} values, expected {spec.count}")
            if spec.tagged:
                out += _tagged(values, TAG_INT8 if layer.name in int8_layers and spec.role == "weight" else float_tag)
            else:
                out += values.astype("<f4").tobytes()
    return bytes(out)


def check_files(param: Path, weights: Path) -> dict[str, int]:
    """Our own structural check of an NCNN pair: every array where the .param puts it, int8 layers
    with int8 weights (values in [-127, 127]) and positive finite scales, nothing left over.
    Returns counts per storage kind; a malformed pair raises NcnnFormatError (one line)."""
    model = read_param(param)
    reader = _Reader(read_bytes(weights, "NCNN .bin file"), weights)
    counts = {"int8_layers": 0, "fp16_arrays": 0, "fp32_arrays": 0}
    for layer in model.layers:
        term = layer.geti(8, 0) if layer.type in CONV_TYPES + ("InnerProduct",) else 0
        for spec in array_specs(layer):
            values, tag = reader.array(spec, f"layer {layer.name}'s {spec.role}")
            if spec.role == "weight" and term and tag != TAG_INT8 and tag != TAG_FP32:
                raise NcnnFormatError(f"{weights}: layer {layer.name} is int8 (8={term}) but its weights are not int8")
            if spec.role == "weight" and tag == TAG_INT8 and not term:
                raise NcnnFormatError(f"{weights}: layer {layer.name} has int8 weights but no 8= int8 scale term")
            is_scale = spec.role.endswith("scale") or spec.role == "weight_scales"
            if is_scale and not (np.isfinite(values).all() and (values > 0).all()):
                raise NcnnFormatError(
                    f"{weights}: layer {layer.name}'s {spec.role} holds {values[:4].tolist()}…, not positive "
                    f"scales (the .param says {spec.count}; a wrong scale count shifts every array after it)"
                )
            if tag == TAG_FP16:
                counts["fp16_arrays"] += 1
            elif tag == TAG_FP32:
                counts["fp32_arrays"] += 1
        counts["int8_layers"] += bool(term)
    if reader.off != len(reader.data):
        raise NcnnFormatError(
            f"{weights}: {len(reader.data) - reader.off} bytes left after the last layer's arrays "
            "(a layer holds more scales or weights than its .param says)"
        )
    return counts
