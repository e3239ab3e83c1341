"""Darknet `.cfg` + `.weights` → ONNX, without torch: every layer the official AlexeyAB YOLO cfgs use
(YOLOv3, v3-tiny/-prn/-spp, v4, v4-tiny/-3l, Scaled-YOLOv4 csp, v4-sam-mish-csp-reorg-bfm, v7,
v7-tiny, enet-coco) and what WongKinYiu's PyTorch_YOLOv4 writes, with Darknet's semantics.

The graph is written as trained — each `[convolutional]` with `batch_normalize=1` is a Conv followed
by a BatchNormalization (`fold-bn` folds it), activations as written — and ends in the decoded
inference output `output0 [1, N, 5 + nc]` (xywh in input pixels, objectness, class scores: the
`yolov5` head format), with graphopt metadata.

Layers, as Darknet computes them at inference (AlexeyAB's src/*_layer.c):
- `[net]`: width, height (1..MAX_SIDE), channels (3), `letter_box` (the preprocessing: letterbox when
  1, else a plain resize to the network size — what `darknet detector map` does).
- `[convolutional]`: batch_normalize, filters, size, stride (or stride_x/stride_y), pad/padding, groups,
  activation (leaky 0.1, mish, swish, logistic, relu, linear).
- `[route]`: layers; `groups`/`group_id` take one channel group of each input. `[route_lhalf]`:
  PyTorch_YOLOv4's first-half route.
- `[shortcut]`: `from` (one or more layers) added to the layer before; Darknet adds over the
  *overlapping* channels (a partial residual, yolov3-tiny-prn: the output keeps the previous layer's
  channels, an input with fewer adds into the first ones, one with more gives only its first ones);
  `weights_type=per_feature|per_channel` scales each input by weights read from `.weights` after the
  layer before, `weights_normalization=relu|softmax` normalizes them (sum + 0.0001), then activation.
- `[maxpool]`: size, stride (stride_x/stride_y), padding (default size−1): Darknet starts the window
  padding/2 before the edge and the output is (w + padding − size)/stride + 1, so `size=2 stride=1`
  pads one pixel on the right and bottom (yolov3-tiny); SPP's 5/9/13 keep the size.
- `[upsample]`: stride s > 0 repeats each pixel s×s (nearest), s < 0 sums s×s blocks; times `scale`.
- `[avgpool]`: the global average (→ C×1×1). `[dropout]`: the identity at inference.
- `[scale_channels]`: the `from` layer times the layer before: per channel (the layer before is
  C×1×1), or per pixel with `scale_wh=1` (1×H×W); then activation.
- `[sam]`: the `from` layer times the layer before, elementwise; then activation.
- `[reorg3d]` (Darknet's REORG): space-to-depth, out[(dy·s + dx)·C + c, y, x] = in[c, y·s + dy, x·s + dx];
  `reverse=1` is Darknet's own inverse index map.
- `[reorg]` (Darknet's REORG_OLD, YOLOv2's passthrough): *not* a space-to-depth of the tensor —
  Darknet runs the same index map with the input's sizes, i.e. it reads the C×H×W buffer as
  C/s²×Hs×Ws, takes that space-to-depth (C×H×W) and reads the result as C·s²×H/s×W/s;
  `reverse=1` is a depth-to-space.
- `[yolo]`: classes (Darknet's default 20), num, mask, anchors, scale_x_y, new_coords; `nms_kind` and
  `beta_nms` are recorded in the metadata (Darknet's own NMS; graphopt's runtime does greedy IoU NMS);
  jitter, ignore_thresh, truth_thresh, random, resize, iou_thresh, iou_loss, iou/cls/obj normalizers,
  objectness_smooth, max_delta, label_smooth_eps, counters_per_class … are training-only.
Any other layer type is refused, with its line; so is an option that changes inference in a way
graphopt does not build (`dilation`, `antialiasing`, `share_index`, binary/xnor, deformable convs,
`maxpool_depth`, …). Layers that refer to a `[yolo]` layer are refused (Darknet would hand them the
activated head). Options Darknet reads only for training are ignored.

Decode (`decode=`):
- `darknet` (default): what Darknet's yolo layer computes, from the cfg: xy = (σ(t)·s − (s−1)/2 + grid)
  · stride with s = scale_x_y, wh = exp(t)·anchor; with `new_coords=1` (the conv is logistic
  already) xy = (t·s − (s−1)/2 + grid) · stride, wh = (2t)²·anchor.
- `scaled`: what PyTorch_YOLOv4's `YOLOLayer` computes for every cfg (its training decode):
  σ everywhere, xy = (2σ − 0.5 + grid)·stride, wh = (2σ)²·anchor.

`.weights`: header int32 major, minor, revision, then images seen (int64 when major·10+minor ≥ 2,
else int32); then, layer by layer in cfg order: per conv BN beta, gamma, mean, variance (or the conv
bias), then the filters; per weighted `[shortcut]` its weights. The file must hold exactly what the
cfg needs: weights for another cfg are refused, saying how many values were missing or left over.
`weights_layout(cfg)` lists what a cfg needs, block by block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.errors import GraphoptError
from graphopt.core.fileio import read_bytes
from runtime.metadata import MAX_INPUT_SIDE

KNOWN = {
    "net",
    "convolutional",
    "route",
    "route_lhalf",
    "shortcut",
    "upsample",
    "maxpool",
    "avgpool",
    "dropout",
    "scale_channels",
    "sam",
    "reorg",
    "reorg3d",
    "yolo",
}
ACTIVATIONS = {"leaky", "mish", "swish", "silu", "logistic", "relu", "linear"}
# Darknet's activate_array (used by [sam] and [scale_channels]) has no swish or mish.
PLAIN_ACTIVATIONS = {"leaky", "logistic", "relu", "linear"}
# Options that change what a layer computes at inference and that graphopt does not build, with the
# value that leaves the layer as graphopt builds it (None: any value is refused).
UNSUPPORTED: dict[str, dict[str, float | None]] = {
    "convolutional": {
        "dilation": 1,
        "antialiasing": 0,
        "share_index": None,
        "binary": 0,
        "xnor": 0,
        "bin_output": 0,
        "sway": 0,
        "rotate": 0,
        "stretch": 0,
        "stretch_sway": 0,
        "flipped": 0,
        "coordconv": 0,
        "reverse": 0,
        "cbn": 0,
        "dontload": 0,
        "dontloadscales": 0,
    },
    "maxpool": {"maxpool_depth": 0, "antialiasing": 0},
}
# Darknet normalizes with sqrt(variance + .00001f); PyTorch_YOLOv4 builds its BatchNorm2d with 1e-4.
DARKNET_BN_EPS = 1e-5
# Darknet's weighted [shortcut] adds this to the sum it normalizes by (blas.c, shortcut_multilayer_cpu).
SHORTCUT_NORM_EPS = 1e-4
# Darknet's letterbox fills with 0.5 grey (image.c, letterbox_image): 127 in 8-bit.
DARKNET_LETTERBOX_PAD = 127
MAX_CFG_BYTES = 4 << 20
MAX_SIDE = MAX_INPUT_SIDE  # the one bound on input sizes (runtime.metadata): a side above it is no detector's
MAX_KERNEL = 512  # a conv or pooling window larger than this is not a detector layer (and would not finish)
MAX_LAYER_VALUES = 1 << 28  # one layer's output (1 GiB of float32): a cfg past this would exhaust memory


@dataclass
class Section:
    kind: str
    line: int
    values: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: Any = None, cast: type = int) -> Any:
        if key not in self.values:
            if default is None:
                raise GraphoptError(f"line {self.line}: [{self.kind}] needs '{key}'")
            return default
        try:
            return cast(float(self.values[key])) if cast is int else cast(self.values[key])
        except (ValueError, OverflowError):
            raise GraphoptError(
                f"line {self.line}: [{self.kind}] {key}={self.values[key]!r} is not a number"
            ) from None

    def ints(self, key: str) -> list[int]:
        try:
            return [int(v) for v in self.values[key].split(",") if v.strip()]
        except KeyError:
            raise GraphoptError(f"line {self.line}: [{self.kind}] needs '{key}'") from None
        except ValueError:
            raise GraphoptError(
                f"line {self.line}: [{self.kind}] {key}={self.values[key]!r}: expected integers"
            ) from None

    def floats(self, key: str) -> list[float]:
        try:
            return [float(v) for v in self.values[key].split(",") if v.strip()]
        except KeyError:
            raise GraphoptError(f"line {self.line}: [{self.kind}] needs '{key}'") from None
        except ValueError:
            raise GraphoptError(
                f"line {self.line}: [{self.kind}] {key}={self.values[key]!r}: expected numbers"
            ) from None


def parse_cfg(text: str) -> list[Section]:
    """Sections in order; `[net]` first. Unknown layer types are refused with their line."""
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise GraphoptError(f"line {number}: malformed section header {line!r}")
            kind = line[1:-1].strip()
            if kind not in KNOWN:
                raise GraphoptError(
                    f"line {number}: unknown layer [{kind}] (graphopt reads {', '.join(sorted(KNOWN))})"
                )
            sections.append(Section(kind, number))
        elif "=" in line:
            if not sections:
                raise GraphoptError(f"line {number}: a setting before the first [section]")
            key, value = line.split("=", 1)
            sections[-1].values[key.strip()] = value.strip()
        else:
            raise GraphoptError(f"line {number}: expected key=value or [section], got {line!r}")
    if not sections or sections[0].kind != "net":
        raise GraphoptError("the cfg must start with a [net] section")
    if sum(s.kind == "net" for s in sections) > 1:
        raise GraphoptError("the cfg has several [net] sections")
    return sections


@dataclass
class Weights:
    data: np.ndarray
    version: tuple[int, int, int]
    seen: int
    offset: int = 0

    def take(
        self, n: int, what: str, role: str = "", shape: tuple[int, ...] = (), at: tuple[int, int] = (-1, -1)
    ) -> np.ndarray:
        """The next `n` values (`role`, `shape`, `at` = (layer, line): what they are, for `weights_layout`)."""
        if self.offset + n > self.data.size:
            raise GraphoptError(
                f".weights ends early at {what}: needs {n} more value(s), {self.data.size - self.offset} left "
                "(truncated, or weights for another cfg)"
            )
        out = self.data[self.offset : self.offset + n]
        self.offset += n
        return out


def read_weights(path: Path) -> Weights:
    raw = read_bytes(path, "Darknet .weights file")
    if len(raw) < 16:
        raise GraphoptError(f"{path}: too short for a Darknet .weights header ({len(raw)} bytes)")
    major, minor, revision = (int(v) for v in np.frombuffer(raw[:12], "<i4"))
    if not (0 <= major < 100 and 0 <= minor < 1000):
        raise GraphoptError(
            f"{path}: not a Darknet .weights file (header version {major}.{minor}.{revision})"
        )
    wide = major * 10 + minor >= 2
    seen = int(np.frombuffer(raw[12:20] if wide else raw[12:16], "<i8" if wide else "<i4")[0])
    body = raw[20 if wide else 16 :]
    if len(body) % 4:
        raise GraphoptError(
            f"{path}: truncated ({len(body)} bytes of weights is not a whole number of floats)"
        )
    return Weights(np.frombuffer(body, "<f4").copy(), (major, minor, revision), seen)


@dataclass(frozen=True)
class WeightBlock:
    """One block of a cfg's `.weights`, in file order: `role` is bn_beta, bn_gamma, bn_mean, bn_var,
    bias, kernel or shortcut."""

    layer: int
    line: int
    role: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class _Recorder(Weights):
    """Stands in for a `.weights` file: hands out zeros (never written to, so never resident) and
    records what the cfg asks for."""

    def __init__(self) -> None:
        super().__init__(np.zeros(0, np.float32), (0, 2, 5), 0)
        self.blocks: list[WeightBlock] = []

    def take(
        self, n: int, what: str, role: str = "", shape: tuple[int, ...] = (), at: tuple[int, int] = (-1, -1)
    ) -> np.ndarray:
        self.blocks.append(WeightBlock(at[0], at[1], role, shape or (n,)))
        self.offset += n
        return np.zeros(n, np.float32)


@dataclass
class Tensor:
    name: str
    channels: int
    h: int
    w: int
    head: bool = False  # a [yolo] layer's output: nothing may refer to it


class _Builder:
    def __init__(self, opset: int, record_only: bool = False) -> None:
        self.opset = opset
        self.record_only = record_only  # weights_layout: the graph's shape, no tensor bytes
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, value: np.ndarray, base: str) -> str:
        n = self.name(base)
        if not self.record_only:
            self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def node(self, op: str, inputs: list[str], base: str, outputs: int = 1, **attrs: Any) -> Any:
        outs = [self.name(f"{base}/{op}_out") for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(f"{base}/{op}"), **attrs))
        return outs[0] if outputs == 1 else outs

    def activation(self, x: str, kind: str, base: str) -> str:
        if kind == "linear":
            return x
        if kind == "leaky":
            return self.node("LeakyRelu", [x], base, alpha=0.1)
        if kind == "relu":
            return self.node("Relu", [x], base)
        if kind == "logistic":
            return self.node("Sigmoid", [x], base)
        if kind in ("swish", "silu"):
            return self.node("Mul", [x, self.node("Sigmoid", [x], base)], base)
        if kind == "mish":
            if self.opset >= 18:
                return self.node("Mish", [x], base)
            return self.node("Mul", [x, self.node("Tanh", [self.node("Softplus", [x], base)], base)], base)
        raise AssertionError(kind)


@dataclass
class DarknetModel:
    model: onnx.ModelProto
    names: dict[int, str]
    strides: list[int]
    imgsz: tuple[int, int]
    convs: int
    version: tuple[int, int, int]
    seen: int
    letterbox: bool = False  # [net] letter_box=1
    nms: dict[str, Any] | None = None  # the last [yolo]'s nms_kind / beta_nms, when set
    layers: list[str] = field(default_factory=list)  # the tensor each layer outputs (layer i at i)


def _side(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
        raise GraphoptError(f"{what}={value}: the input side must be 1..{MAX_SIDE} pixels")
    return value


def _input_size(net: Section, imgsz: tuple[int, int] | None) -> tuple[int, int]:
    if imgsz is not None:
        return _side(imgsz[0], "--imgsz height"), _side(imgsz[1], "--imgsz width")
    return (
        _side(net.get("height", 416), f"line {net.line}: [net] height"),
        _side(net.get("width", 416), f"line {net.line}: [net] width"),
    )


def _refuse_unsupported(sec: Section) -> None:
    for key, harmless in UNSUPPORTED.get(sec.kind, {}).items():
        if key not in sec.values:
            continue
        if harmless is not None and sec.get(key, harmless, float) == harmless:
            continue
        if key == "dilation" and sec.get("size", 1) == 1:
            continue  # Darknet ignores dilation on 1x1 convs
        raise GraphoptError(
            f"line {sec.line}: [{sec.kind}] {key}={sec.values[key]}: graphopt does not build this option "
            "(it changes what the layer computes)"
        )


def _activation_of(sec: Section, default: str, allowed: set[str] = ACTIVATIONS) -> str:
    act = sec.values.get("activation", default)
    if act not in allowed:
        raise GraphoptError(
            f"line {sec.line}: [{sec.kind}] activation={act!r} (graphopt reads {', '.join(sorted(allowed))} here)"
        )
    return act


def _normalized(weights: np.ndarray, how: str) -> np.ndarray:
    """Darknet's weighted-shortcut normalization over the inputs (axis 0), per feature or channel."""
    w = weights.astype(np.float32)
    if how == "relu":
        pos = np.maximum(w, np.float32(0))
        return pos / (np.float32(SHORTCUT_NORM_EPS) + pos.sum(0, keepdims=True))
    if how == "softmax":
        e = np.exp(w - w.max(0, keepdims=True))
        return e / (np.float32(SHORTCUT_NORM_EPS) + e.sum(0, keepdims=True))
    return w


class _Net:
    """The layers of one cfg, built in order: layer i's output is `self.outputs[i]`."""

    def __init__(self, b: _Builder, weights: Weights, h: int, w: int, bn_eps: float) -> None:
        self.b, self.weights, self.h, self.w, self.bn_eps = b, weights, h, w, bn_eps
        self.outputs: list[Tensor] = []
        self.heads: list[tuple[str, int, int, int, np.ndarray, Section]] = []
        self.nc: int | None = None
        self.convs = 0
        self.nms: dict[str, Any] | None = None

    def run(self, layers: list[Section]) -> None:
        x = Tensor("images", 3, self.h, self.w)
        for i, sec in enumerate(layers):
            _refuse_unsupported(sec)
            self.i, self.sec, self.base = i, sec, f"/layer.{i}"
            kind = "route" if sec.kind == "route_lhalf" else sec.kind
            if x.head and kind != "route":
                raise GraphoptError(
                    f"line {sec.line}: [{sec.kind}] follows a [yolo] layer directly (Darknet would feed it the "
                    "activated head); route from the layer before the [yolo]"
                )
            x = getattr(self, f"_{kind}")(x, sec)
            if x.channels * x.h * x.w > MAX_LAYER_VALUES or max(x.h, x.w) > 4 * MAX_SIDE:
                raise GraphoptError(
                    f"line {sec.line}: [{sec.kind}] would output {x.channels}x{x.h}x{x.w} values per image: "
                    "too large for a detector"
                )
            self.outputs.append(x)

    # -- helpers ----------------------------------------------------------------------------------
    def ref(self, offset: int) -> Tensor:
        i, sec = self.i, self.sec
        j = i + offset if offset < 0 else offset
        if not 0 <= j < i:
            raise GraphoptError(
                f"line {sec.line}: [{sec.kind}] refers to layer {offset}, which is not before it"
            )
        if self.outputs[j].head:
            raise GraphoptError(
                f"line {sec.line}: [{sec.kind}] refers to layer {j}, a [yolo] layer (graphopt reads the "
                "layer before it)"
            )
        return self.outputs[j]

    def take(self, n: int, role: str, shape: tuple[int, ...] = ()) -> np.ndarray:
        what = f"layer {self.i} (line {self.sec.line})"
        return self.weights.take(n, what, role=role, shape=shape, at=(self.i, self.sec.line))

    def const(self, value: Any, what: str) -> str:
        return self.b.const(np.asarray(value), f"{self.base}/{what}")

    def node(self, op: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> Any:
        return self.b.node(op, inputs, self.base, outputs, **attrs)

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, np.int64), "shape")

    def from_one(self) -> Tensor:
        froms = self.sec.ints("from")
        if len(froms) != 1:
            raise self.fail("from= takes one layer")
        return self.ref(froms[0])

    def fail(self, message: str) -> GraphoptError:
        return GraphoptError(f"line {self.sec.line}: [{self.sec.kind}] {message}")

    def channels(self, x: Tensor, start: int, end: int) -> str:
        if (start, end) == (0, x.channels):
            return x.name
        return self.node("Slice", [x.name, self.ints(start), self.ints(end), self.ints(1)])

    # -- layers -----------------------------------------------------------------------------------
    def _convolutional(self, x: Tensor, sec: Section) -> Tensor:
        self.convs += 1
        bn = sec.get("batch_normalize", 0)
        filters, size, groups = sec.get("filters", 1), sec.get("size", 1), sec.get("groups", 1)
        stride = sec.get("stride", 1)
        sy, sx = sec.get("stride_y", stride), sec.get("stride_x", stride)
        act = _activation_of(sec, "logistic")
        if size > MAX_KERNEL:
            raise self.fail(f"size={size}: graphopt reads kernels up to {MAX_KERNEL}")
        if min(filters, size, sy, sx, groups) < 1 or x.channels % groups or filters % groups:
            raise self.fail(
                f"filters={filters} size={size} stride={sy}x{sx} groups={groups} does not fit its "
                f"{x.channels} input channels"
            )
        pad = size // 2 if sec.get("pad", 0) else sec.get("padding", 0)
        oh, ow = (x.h + 2 * pad - size) // sy + 1, (x.w + 2 * pad - size) // sx + 1
        if pad < 0 or oh < 1 or ow < 1:
            raise self.fail(f"size={size} padding={pad} on a {x.h}x{x.w} input leaves no output")
        if bn:
            beta, gamma = self.take(filters, "bn_beta"), self.take(filters, "bn_gamma")
            mean, var = self.take(filters, "bn_mean"), self.take(filters, "bn_var")
        else:
            bias = self.take(filters, "bias")
        shape = (filters, x.channels // groups, size, size)
        kernel = self.take(int(np.prod(shape)), "kernel", shape).reshape(shape)
        inputs = [x.name, self.const(kernel, "conv.weight")] + ([] if bn else [self.const(bias, "conv.bias")])
        y = self.node(
            "Conv", inputs, kernel_shape=[size, size], strides=[sy, sx], pads=[pad] * 4, group=groups
        )
        if bn:
            if np.any(var < 0):
                raise GraphoptError(
                    f"layer {self.i} (line {sec.line}): negative BatchNorm variance (weights for another cfg?)"
                )
            params = [("scale", gamma), ("bias", beta), ("mean", mean), ("var", var)]
            y = self.node(
                "BatchNormalization", [y, *(self.const(v, f"bn.{k}") for k, v in params)], epsilon=self.bn_eps
            )
        return Tensor(self.b.activation(y, act, self.base), filters, oh, ow)

    def _route(self, x: Tensor, sec: Section) -> Tensor:
        srcs = [self.ref(k) for k in sec.ints("layers")]
        if not srcs:
            raise self.fail("with no layers")
        if len({(s.h, s.w) for s in srcs}) > 1:
            sizes = ", ".join(f"{s.h}x{s.w}" for s in srcs)
            raise self.fail(
                f"joins layers of different sizes ({sizes}): is the input size a multiple of the cfg's total stride?"
            )
        groups, group_id = (
            (2, 0) if sec.kind == "route_lhalf" else (sec.get("groups", 1), sec.get("group_id", 0))
        )
        parts = []
        for s in srcs:
            if groups < 1 or s.channels % groups or not 0 <= group_id < groups:
                raise self.fail(f"groups={groups} group_id={group_id} on {s.channels} channels")
            step = s.channels // groups
            parts.append(Tensor(self.channels(s, group_id * step, (group_id + 1) * step), step, s.h, s.w))
        name = parts[0].name if len(parts) == 1 else self.node("Concat", [p.name for p in parts], axis=1)
        return Tensor(name, sum(p.channels for p in parts), parts[0].h, parts[0].w)

    def _shortcut(self, x: Tensor, sec: Section) -> Tensor:
        adds = [self.ref(k) for k in sec.ints("from")]
        if not adds:
            raise self.fail("from= names no layer")
        for a in adds:
            if (a.h, a.w) != (x.h, x.w):
                raise self.fail(
                    f"adds {a.channels}x{a.h}x{a.w} to {x.channels}x{x.h}x{x.w}: Darknet adds only inputs of the "
                    "same height and width"
                )
        kind = sec.values.get("weights_type", "none")
        how = sec.values.get("weights_normalization", "none")
        if kind not in ("none", "per_feature", "per_layer", "per_channel"):
            raise self.fail(f"weights_type={kind!r} (none, per_feature or per_channel)")
        if how not in ("none", "relu", "avg_relu", "softmax"):
            raise self.fail(f"weights_normalization={how!r} (none, relu or softmax)")
        act = _activation_of(sec, "linear")
        scales: list[Any] = [None] * (len(adds) + 1)
        if kind != "none":
            per_channel = kind == "per_channel"
            n = (len(adds) + 1) * (x.channels if per_channel else 1)
            w = _normalized(
                self.take(n, "shortcut", (n,)).reshape(len(adds) + 1, -1),
                "relu" if how == "avg_relu" else how,
            )
            scales = [row.reshape(1, -1, 1, 1) if per_channel else row.reshape(()) for row in w]
        acc = x.name if scales[0] is None else self.node("Mul", [x.name, self.const(scales[0], "weights")])
        for a, scale in zip(adds, scales[1:], strict=True):
            overlap = min(a.channels, x.channels)  # Darknet adds where both have channels
            add = self.channels(a, 0, overlap)
            if scale is not None:
                add = self.node(
                    "Mul", [add, self.const(scale[:, :overlap] if scale.ndim else scale, "weights")]
                )
            if overlap == x.channels:
                acc = self.node("Add", [acc, add])
            else:
                low, high = self.node(
                    "Split", [acc, self.ints(overlap, x.channels - overlap)], outputs=2, axis=1
                )
                acc = self.node("Concat", [self.node("Add", [low, add]), high], axis=1)
        return Tensor(self.b.activation(acc, act, self.base), x.channels, x.h, x.w)

    def _upsample(self, x: Tensor, sec: Section) -> Tensor:
        s, scale = sec.get("stride", 2), sec.get("scale", 1.0, float)
        if s == 0:
            raise self.fail("stride=0")
        if s > 0:
            y = self.node(
                "Resize",
                [x.name, "", self.const(np.array([1, 1, s, s], np.float32), "scales")],
                mode="nearest",
            )
            out = Tensor(y, x.channels, x.h * s, x.w * s)
        else:  # Darknet's "downsample": the sum over each s×s block
            s = -s
            if x.h % s or x.w % s:
                raise self.fail(f"stride={-s} does not divide its {x.h}x{x.w} input")
            y = self.node("AveragePool", [x.name], kernel_shape=[s, s], strides=[s, s])
            scale *= s * s
            out = Tensor(y, x.channels, x.h // s, x.w // s)
        if scale != 1.0:
            out = Tensor(
                self.node("Mul", [out.name, self.const(np.float32(scale), "scale")]),
                out.channels,
                out.h,
                out.w,
            )
        return out

    def _maxpool(self, x: Tensor, sec: Section) -> Tensor:
        stride = sec.get("stride", 1)
        sy, sx = sec.get("stride_y", stride), sec.get("stride_x", stride)
        size = sec.get("size", stride)
        padding = sec.get("padding", size - 1)
        if size > MAX_KERNEL:
            raise self.fail(f"size={size}: graphopt reads windows up to {MAX_KERNEL}")
        if min(size, sy, sx) < 1 or padding < 0:
            raise self.fail(f"size={size} stride={sy}x{sx} padding={padding}")
        oh, ow = (x.h + padding - size) // sy + 1, (x.w + padding - size) // sx + 1
        begin = padding // 2  # Darknet's window starts padding/2 before the edge
        # the far side pads only as far as the last window reaches
        end_h, end_w = (max(0, (o - 1) * s + size - n - begin) for o, s, n in ((oh, sy, x.h), (ow, sx, x.w)))
        if oh < 1 or ow < 1 or max(begin, end_h, end_w) >= size:
            raise self.fail(f"size={size} stride={sy}x{sx} padding={padding} on a {x.h}x{x.w} input")
        y = self.node(
            "MaxPool",
            [x.name],
            kernel_shape=[size, size],
            strides=[sy, sx],
            pads=[begin, begin, end_h, end_w],
        )
        return Tensor(y, x.channels, oh, ow)

    def _avgpool(self, x: Tensor, sec: Section) -> Tensor:
        return Tensor(self.node("GlobalAveragePool", [x.name]), x.channels, 1, 1)

    def _dropout(self, x: Tensor, sec: Section) -> Tensor:
        return x  # the identity at inference; it still counts as a layer for route/shortcut offsets

    def _scale_channels(self, x: Tensor, sec: Section) -> Tensor:
        src = self.from_one()
        act = _activation_of(sec, "linear", PLAIN_ACTIVATIONS)
        if sec.get("scale_wh", 0):
            if x.channels != 1 or (x.h, x.w) != (src.h, src.w):
                raise self.fail(
                    f"scale_wh=1 scales {src.channels}x{src.h}x{src.w} by 1xHxW, got {x.channels}x{x.h}x{x.w}"
                )
        elif (x.h, x.w) != (1, 1) or x.channels != src.channels:
            raise self.fail(
                f"scales {src.channels}x{src.h}x{src.w} per channel by Cx1x1, got {x.channels}x{x.h}x{x.w}"
            )
        y = self.node("Mul", [src.name, x.name])
        return Tensor(self.b.activation(y, act, self.base), src.channels, src.h, src.w)

    def _sam(self, x: Tensor, sec: Section) -> Tensor:
        src = self.from_one()
        act = _activation_of(sec, "linear", PLAIN_ACTIVATIONS)
        if (src.channels, src.h, src.w) != (x.channels, x.h, x.w):
            raise self.fail(
                f"multiplies {src.channels}x{src.h}x{src.w} by {x.channels}x{x.h}x{x.w}: sizes differ"
            )
        return Tensor(
            self.b.activation(self.node("Mul", [src.name, x.name]), act, self.base), x.channels, x.h, x.w
        )

    def _space_to_depth(self, name: str, c: int, h: int, w: int, s: int) -> str:
        """out[(dy·s + dx)·c + k, y, x] = in[k, y·s + dy, x·s + dx], as reshape/transpose (what NCNN converts)."""
        t = self.node("Reshape", [name, self.ints(1, c * h // s, s, w // s, s)])
        t = self.node("Transpose", [t], perm=[0, 2, 4, 1, 3])
        return self.node("Reshape", [t, self.ints(1, c * s * s, h // s, w // s)])

    def _depth_to_space(self, name: str, c: int, h: int, w: int, s: int) -> str:
        """The inverse: out[k, y·s + dy, x·s + dx] = in[(dy·s + dx)·(c/s²) + k, y, x]."""
        t = self.node("Reshape", [name, self.ints(1, s, s, c // (s * s) * h, w)])
        t = self.node("Transpose", [t], perm=[0, 3, 1, 4, 2])
        return self.node("Reshape", [t, self.ints(1, c // (s * s), h * s, w * s)])

    def _reorg3d(self, x: Tensor, sec: Section) -> Tensor:
        return self._reorg_any(x, sec, old=False)

    def _reorg(self, x: Tensor, sec: Section) -> Tensor:
        return self._reorg_any(x, sec, old=True)

    def _reorg_any(self, x: Tensor, sec: Section, old: bool) -> Tensor:
        """Darknet's reorg_cpu index map, run with the output's sizes ([reorg3d]) or the input's ([reorg])."""
        s, reverse = sec.get("stride", 1), bool(sec.get("reverse", 0))
        c, h, w = x.channels, x.h, x.w
        if s < 1:
            raise self.fail(f"stride={s}")
        if reverse:
            # [reorg]: depth-to-space of the tensor; [reorg3d]: the same map on the buffer read as C/s²×Hs×Ws
            if c % (s**4 if not old else s**2):
                raise self.fail(
                    f"reverse=1 stride={s} needs channels divisible by {s**4 if not old else s**2}, got {c}"
                )
            if old:
                y = self._depth_to_space(x.name, c, h, w, s)
            else:
                flat = self.node("Reshape", [x.name, self.ints(1, c // (s * s), h * s, w * s)])
                y = self._depth_to_space(flat, c // (s * s), h * s, w * s, s)
                y = self.node("Reshape", [y, self.ints(1, c // (s * s), h * s, w * s)])
            return Tensor(y, c // (s * s), h * s, w * s)
        if h % s or w % s or (old and c % (s * s)):
            raise self.fail(f"stride={s} does not divide its {c}x{h}x{w} input")
        if old:  # YOLOv2's passthrough
            flat = self.node("Reshape", [x.name, self.ints(1, c // (s * s), h * s, w * s)])
            y = self._space_to_depth(flat, c // (s * s), h * s, w * s, s)
            y = self.node("Reshape", [y, self.ints(1, c * s * s, h // s, w // s)])
        else:
            y = self._space_to_depth(x.name, c, h, w, s)
        return Tensor(y, c * s * s, h // s, w // s)

    def _yolo(self, x: Tensor, sec: Section) -> Tensor:
        classes = sec.get("classes", 20)  # Darknet's default
        anchors_flat = sec.floats("anchors")
        total = sec.get("num", 1)  # Darknet's default: one anchor
        if len(anchors_flat) % 2:
            raise self.fail(f"anchors= holds {len(anchors_flat)} numbers: anchors are w,h pairs")
        if total < 1 or len(anchors_flat) < 2 * total:
            raise self.fail(
                f"num={total} needs {2 * total} anchor numbers, anchors= holds {len(anchors_flat)}"
            )
        anchors = np.array(anchors_flat[: 2 * total], np.float32).reshape(-1, 2)
        mask = sec.ints("mask") if "mask" in sec.values else list(range(total))
        if not mask or any(not 0 <= m < total for m in mask):
            raise self.fail(f"mask {mask} outside its {total} anchors")
        if classes < 1:
            raise self.fail(f"classes={classes}")
        if self.nc is not None and classes != self.nc:
            raise self.fail(f"classes={classes}, an earlier head has {self.nc}")
        self.nc = classes
        if x.channels != len(mask) * (5 + classes):
            raise self.fail(
                f"expects {len(mask)} × (5 + {classes}) = {len(mask) * (5 + classes)} channels, the layer before "
                f"gives {x.channels} (mismatched filter count)"
            )
        if self.h % x.h or self.w % x.w or self.h // x.h != self.w // x.w:
            raise self.fail(f"grid {x.h}x{x.w} does not divide the input {self.h}x{self.w}")
        if "nms_kind" in sec.values or "beta_nms" in sec.values:
            self.nms = {
                "kind": sec.values.get("nms_kind", "default"),
                "beta_nms": sec.get("beta_nms", 0.6, float),
            }
        self.heads.append((x.name, x.h, x.w, self.h // x.h, anchors[mask], sec))
        return Tensor(x.name, x.channels, x.h, x.w, head=True)


def build(
    cfg_text: str,
    weights: Weights,
    *,
    imgsz: tuple[int, int] | None = None,
    names: dict[int, str] | None = None,
    decode: str = "darknet",
    opset: int = 17,
    bn_eps: float = DARKNET_BN_EPS,
    record_only: bool = False,
) -> DarknetModel:
    if decode not in ("darknet", "scaled"):
        raise GraphoptError(f"decode must be darknet or scaled, got {decode!r}")
    sections = parse_cfg(cfg_text)
    net = sections[0]
    h, w = _input_size(net, imgsz)
    channels = net.get("channels", 3)
    if channels != 3:
        raise GraphoptError(f"[net] channels={channels}: graphopt exports 3-channel (RGB) detectors")
    b = _Builder(opset, record_only)
    layers = _Net(b, weights, h, w, bn_eps)
    layers.run(sections[1:])
    if not layers.heads:
        raise GraphoptError("the cfg has no [yolo] layer: not a detector graphopt can export")
    left = weights.data.size - weights.offset
    if left > 0:
        raise GraphoptError(f".weights has {left} value(s) more than the cfg uses: weights for another cfg")
    nc = layers.nc
    assert nc is not None
    decoded = [
        _decode(b, name, gh, gw, stride, anchors, nc, sec, decode)
        for name, gh, gw, stride, anchors, sec in layers.heads
    ]
    out = b.node("Concat", decoded, "/detect", axis=1) if len(decoded) > 1 else decoded[0]
    b.nodes.append(helper.make_node("Identity", [out], ["output0"], name="/detect/output"))
    total = sum(len(a) * gh * gw for _, gh, gw, _, a, _ in layers.heads)
    graph = helper.make_graph(
        b.nodes,
        "darknet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, total, 5 + nc])],
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="graphopt-darknet"
    )
    model.ir_version = min(model.ir_version, 9)
    labels = names or {k: str(k) for k in range(nc)}
    if len(labels) != nc:
        raise GraphoptError(f"{len(labels)} class names for a model with {nc} classes")
    return DarknetModel(
        model,
        labels,
        [s for _, _, _, s, _, _ in layers.heads],
        (h, w),
        layers.convs,
        weights.version,
        weights.seen,
        letterbox=net.get("letter_box", 0) != 0,
        nms=layers.nms,
        layers=[t.name for t in layers.outputs],
    )


def weights_layout(cfg_text: str, imgsz: tuple[int, int] | None = None) -> list[WeightBlock]:
    """What a `.weights` file for this cfg holds after its header, block by block in file order."""
    recorder = _Recorder()
    build(cfg_text, recorder, imgsz=imgsz, record_only=True)
    return recorder.blocks


def _decode(
    b: _Builder, x: str, gh: int, gw: int, stride: int, anchors: np.ndarray, nc: int, sec: Section, mode: str
) -> str:
    """[1, na·(5+nc), gh, gw] → [1, na·gh·gw, 5+nc]: xywh in input pixels, objectness, class scores."""
    na, no = len(anchors), 5 + nc
    base = f"/detect/{sec.line}"
    t = b.node("Reshape", [x, b.const(np.array([1, na, no, gh, gw], np.int64), f"{base}/shape")], base)
    t = b.node("Transpose", [t], base, perm=[0, 1, 3, 4, 2])  # [1, na, gh, gw, no]
    yv, xv = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    grid = np.stack((xv, yv), -1).reshape(1, 1, gh, gw, 2).astype(np.float32)
    anchor_px = anchors.reshape(1, na, 1, 1, 2).astype(np.float32)
    new_coords = sec.get("new_coords", 0) == 1
    scale = sec.get("scale_x_y", 1.0, float)
    if mode == "scaled":
        t = b.node("Sigmoid", [t], base)
    xy, wh, rest = b.node(
        "Split", [t, b.const(np.array([2, 2, no - 4], np.int64), f"{base}/split")], base, outputs=3, axis=4
    )
    if mode == "scaled":
        xy = b.node("Mul", [xy, b.const(np.float32(2.0), f"{base}/two")], base)
        xy = b.node("Add", [xy, b.const((grid - 0.5).astype(np.float32), f"{base}/grid")], base)
        wh = b.node("Mul", [wh, b.const(np.float32(2.0), f"{base}/two")], base)
        wh = b.node("Mul", [b.node("Mul", [wh, wh], base), b.const(anchor_px, f"{base}/anchors")], base)
    else:
        if not new_coords:
            xy = b.node("Sigmoid", [xy], base)
            rest = b.node("Sigmoid", [rest], base)
        if scale != 1.0:
            xy = b.node("Mul", [xy, b.const(np.float32(scale), f"{base}/scale_x_y")], base)
        xy = b.node("Add", [xy, b.const((grid - 0.5 * (scale - 1)).astype(np.float32), f"{base}/grid")], base)
        if new_coords:
            wh = b.node("Mul", [wh, b.const(np.float32(2.0), f"{base}/two")], base)
            wh = b.node("Mul", [b.node("Mul", [wh, wh], base), b.const(anchor_px, f"{base}/anchors")], base)
        else:
            wh = b.node("Mul", [b.node("Exp", [wh], base), b.const(anchor_px, f"{base}/anchors")], base)
    xy = b.node("Mul", [xy, b.const(np.float32(stride), f"{base}/stride")], base)
    t = b.node("Concat", [xy, wh, rest], base, axis=4)
    return b.node("Reshape", [t, b.const(np.array([1, na * gh * gw, no], np.int64), f"{base}/flat")], base)


def read_names(path: Path) -> dict[int, str]:
    """A Darknet `.names` file: one class name per line."""
    from graphopt.core.fileio import read_text

    lines = [line.strip() for line in read_text(path, "class names file (.names)").splitlines()]
    names = [line for line in lines if line]
    if not names:
        raise GraphoptError(f"{path}: no class names in it")
    return dict(enumerate(names))


def export_darknet(
    cfg: str | Path,
    weights: str | Path,
    out: str | Path,
    *,
    imgsz: int | tuple[int, int] | None = None,
    names: str | Path | dict[int, str] | None = None,
    decode: str = "darknet",
    opset: int = 17,
    image: str | Path | None = None,
    bn_eps: float = DARKNET_BN_EPS,
    letterbox: bool | None = None,
) -> dict[str, Any]:
    """Write the ONNX of a Darknet model and check it on onnxruntime (finite outputs of the right shape).

    The preprocessing recorded is the cfg's: `[net] letter_box=1` letterboxes (Darknet's 0.5 grey), else
    the image is resized to the network size, as Darknet's own inference does; `letterbox` overrides."""
    import json
    import time

    from frontends import check_request
    from graphopt.core.fileio import read_text
    from graphopt.core.model import save_model
    from runtime import metadata as keys

    start = time.perf_counter()
    check_request(imgsz, image)
    cfg_path, weights_path = Path(cfg), Path(weights)
    text = read_text(cfg_path, "Darknet .cfg file")
    if isinstance(names, (str, Path)):
        names = read_names(Path(names))
    if isinstance(imgsz, int):
        imgsz = (imgsz, imgsz)
    try:
        built = build(
            text,
            read_weights(weights_path),
            imgsz=imgsz,
            names=names,
            decode=decode,
            opset=opset,
            bn_eps=bn_eps,
        )
    except GraphoptError as exc:
        raise GraphoptError(f"{cfg_path.name}: {exc}") from None
    model = built.model
    boxed = built.letterbox if letterbox is None else letterbox
    if letterbox is None:
        why = (
            "the cfg's [net] letter_box=1"
            if boxed
            else "the cfg's [net] has no letter_box=1: Darknet resizes"
        )
    else:
        why = ("--letterbox" if letterbox else "--no-letterbox") + (
            ""
            if letterbox == built.letterbox
            else f"; the cfg says {'letterbox' if built.letterbox else 'resize'}"
        )
    preprocess = {**keys.DEFAULT_PREPROCESS, "mode": "letterbox" if boxed else "resize"}
    if boxed:
        preprocess["letterbox_pad"] = DARKNET_LETTERBOX_PAD
    source: dict[str, Any] = {
        "family": "darknet",
        "cfg": cfg_path.name,
        "weights": weights_path.name,
        "darknet_version": ".".join(map(str, built.version)),
        "images_seen": built.seen,
        "decode": decode,
        "letter_box": built.letterbox,
        "exporter": "graphopt Darknet frontend (no torch)",
    }
    notes = [
        "no torch: checked on onnxruntime (finite output of the declared shape); compare with the training "
        "framework's output for bit-level trust",
        f"preprocessing: {preprocess['mode']} ({why})",
    ]
    if built.nms:
        source["darknet_nms"] = built.nms
    if built.nms and built.nms["kind"] == "diounms":
        notes.append(
            f"the cfg's [yolo] asks Darknet for DIoU-NMS (nms_kind=diounms, beta_nms {built.nms['beta_nms']}); "
            "graphopt's runtime and fuse-nms do greedy IoU NMS"
        )
    meta = {
        keys.NAMES: {str(k): v for k, v in built.names.items()},
        keys.IMGSZ: list(built.imgsz),
        keys.STRIDES: built.strides,
        keys.HEAD: "yolov5",
        keys.PREPROCESS: preprocess,
        keys.SOURCE: source,
    }
    for k, v in meta.items():
        model.metadata_props.append(
            onnx.StringStringEntryProto(key=k, value=v if isinstance(v, str) else json.dumps(v))
        )
    onnx.checker.check_model(model, full_check=True)
    checked_on = _check_runs(model, image)
    save_model(model, out)
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {
        "output": str(out),
        "family": "darknet",
        "imgsz": list(built.imgsz),
        "opset": opset,
        "decode": decode,
        "verified_on": checked_on,
        "max_abs_diff": None,  # no torch to compare with: see notes
        "ops": ops,
        "conv": ops.get("Conv", 0),
        "batchnorm": ops.get("BatchNormalization", 0),
        "outputs": [
            {
                "name": "output0",
                "shape": [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim],
            }
        ],
        "main_output": None,
        "classes": len(built.names),
        "preprocess": preprocess["mode"],
        "seconds": round(time.perf_counter() - start, 2),
        "notes": notes,
    }


def _check_runs(model: onnx.ModelProto, image: str | Path | None) -> str:
    from graphopt.core.ort_session import run
    from graphopt.data.feeds import FeedSource

    feeds = FeedSource(image, samples=1).feeds_for(model)
    out = run(model, feeds)[0]["output0"]
    want = tuple(d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim)
    if out.shape != want:
        raise GraphoptError(f"the exported graph gives {out.shape}, expected {want}")
    if not np.isfinite(out).all():
        raise GraphoptError("the exported model's output is not finite on the check input (broken weights?)")
    return feeds.description
