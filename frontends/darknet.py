"""Darknet `.cfg` + `.weights` → ONNX, without torch: YOLOv4, YOLOv4-tiny, Scaled-YOLOv4 (csp) as
Darknet (AlexeyAB) or WongKinYiu's PyTorch_YOLOv4 trained them.

The graph is written as trained — each `[convolutional]` with `batch_normalize=1` is a Conv followed
by a BatchNormalization (`fold-bn` folds it), activations as written — and ends in the decoded
inference output `output0 [1, N, 5 + nc]` (xywh in input pixels, objectness, class scores: the
`yolov5` head format), with graphopt metadata.

Layers: `[net]` (width, height, channels), `[convolutional]` (batch_normalize, filters, size,
stride, pad/padding, groups, activation leaky/mish/swish/silu/logistic/relu/linear), `[route]`
(layers; `groups`/`group_id` take one channel group, Darknet's yolov4-tiny), `[route_lhalf]`
(PyTorch_YOLOv4's first-half route), `[shortcut]` (from, activation), `[upsample]` (stride),
`[maxpool]` (size, stride), `[yolo]` (mask, anchors, classes, scale_x_y, new_coords). Anything else
is refused, with the line.

Decode (`decode=`):
- `darknet` (default): what Darknet's yolo layer computes, from the cfg: xy = (σ(t)·s − (s−1)/2 + grid)
  · stride with s = scale_x_y, wh = exp(t)·anchor; with `new_coords=1` (the conv is logistic
  already) xy = (t·s − (s−1)/2 + grid) · stride, wh = (2t)²·anchor.
- `scaled`: what PyTorch_YOLOv4's `YOLOLayer` computes for every cfg (its training decode):
  σ everywhere, xy = (2σ − 0.5 + grid)·stride, wh = (2σ)²·anchor.

`.weights`: header int32 major, minor, revision, then images seen (int64 when major·10+minor ≥ 2,
else int32); then per conv layer in cfg order: BN beta, gamma, mean, variance (or the conv bias),
then the filters. The file must hold exactly what the cfg needs: weights for another cfg are
refused, saying how many values were missing or left over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.errors import GraphoptError
from runtime.metadata import input_size_problem

KNOWN = {"net", "convolutional", "route", "route_lhalf", "shortcut", "upsample", "maxpool", "yolo"}
ACTIVATIONS = {"leaky", "mish", "swish", "silu", "logistic", "relu", "linear"}
# Darknet normalizes with sqrt(variance + .00001f); PyTorch_YOLOv4 builds its BatchNorm2d with 1e-4.
DARKNET_BN_EPS = 1e-5
MAX_CFG_BYTES = 4 << 20


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
        except ValueError:
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

    def take(self, n: int, what: str) -> np.ndarray:
        if self.offset + n > self.data.size:
            raise GraphoptError(
                f".weights ends early at {what}: needs {n} more value(s), {self.data.size - self.offset} left "
                "(truncated, or weights for another cfg)"
            )
        out = self.data[self.offset : self.offset + n]
        self.offset += n
        return out


def read_weights(path: Path) -> Weights:
    from runtime.files import MAX_MODEL_BYTES, FileProblem, input_file

    try:
        input_file(path, "Darknet .weights file", MAX_MODEL_BYTES)
    except FileProblem as exc:
        raise GraphoptError(str(exc)) from None
    raw = path.read_bytes()
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


@dataclass
class Tensor:
    name: str
    channels: int
    h: int
    w: int


class _Builder:
    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, value: np.ndarray, base: str) -> str:
        n = self.name(base)
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


def build(
    cfg_text: str,
    weights: Weights,
    *,
    imgsz: tuple[int, int] | None = None,
    names: dict[int, str] | None = None,
    decode: str = "darknet",
    opset: int = 17,
    bn_eps: float = DARKNET_BN_EPS,
) -> DarknetModel:
    if decode not in ("darknet", "scaled"):
        raise GraphoptError(f"decode must be darknet or scaled, got {decode!r}")
    sections = parse_cfg(cfg_text)
    net = sections[0]
    h, w = imgsz or (net.get("height", 416), net.get("width", 416))
    if problem := input_size_problem(h, w):  # the one bound on input sizes; 0 would divide by zero below
        raise GraphoptError(f"--imgsz: {problem}" if imgsz else f"line {net.line}: [net] {problem}")
    channels = net.get("channels", 3)
    if channels != 3:
        raise GraphoptError(f"[net] channels={channels}: graphopt exports 3-channel (RGB) detectors")
    b = _Builder(opset)
    x = Tensor("images", 3, h, w)
    outputs: list[Tensor] = []  # per layer (index i = layer i, [net] excluded)
    heads: list[tuple[str, int, int, int, np.ndarray, Section]] = []
    nc = None
    convs = 0
    layers = sections[1:]

    def ref(i: int, offset: int, sec: Section) -> Tensor:
        j = i + offset if offset < 0 else offset
        if not 0 <= j < i:
            raise GraphoptError(
                f"line {sec.line}: [{sec.kind}] refers to layer {offset}, which is not before it"
            )
        return outputs[j]

    for i, sec in enumerate(layers):
        base = f"/layer.{i}"
        if sec.kind == "convolutional":
            convs += 1
            bn = sec.get("batch_normalize", 0)
            filters, size, stride = sec.get("filters"), sec.get("size", 1), sec.get("stride", 1)
            groups = sec.get("groups", 1)
            act = sec.values.get("activation", "logistic")
            if act not in ACTIVATIONS:
                raise GraphoptError(
                    f"line {sec.line}: activation={act!r} (graphopt reads {', '.join(sorted(ACTIVATIONS))})"
                )
            if filters < 1 or size < 1 or stride < 1 or groups < 1 or x.channels % groups or filters % groups:
                raise GraphoptError(
                    f"line {sec.line}: [convolutional] filters={filters} size={size} stride={stride} groups={groups} "
                    f"does not fit its {x.channels} input channels"
                )
            pad = size // 2 if sec.get("pad", 0) else sec.get("padding", 0)
            what = f"layer {i} (line {sec.line})"
            if bn:
                beta, gamma, mean, var = (weights.take(filters, what) for _ in range(4))
                bias = None
            else:
                bias = weights.take(filters, what)
            kernel = weights.take(filters * (x.channels // groups) * size * size, what).reshape(
                filters, x.channels // groups, size, size
            )
            inputs = [x.name, b.const(kernel, f"{base}/conv.weight")]
            if bias is not None:
                inputs.append(b.const(bias, f"{base}/conv.bias"))
            y = b.node(
                "Conv",
                inputs,
                base,
                kernel_shape=[size, size],
                strides=[stride, stride],
                pads=[pad] * 4,
                group=groups,
            )
            if bn:
                if np.any(var < 0):
                    raise GraphoptError(f"{what}: negative BatchNorm variance (weights for another cfg?)")
                y = b.node(
                    "BatchNormalization",
                    [
                        y,
                        *(
                            b.const(v, f"{base}/bn.{k}")
                            for k, v in (("scale", gamma), ("bias", beta), ("mean", mean), ("var", var))
                        ),
                    ],
                    base,
                    epsilon=bn_eps,
                )
            y = b.activation(y, act, base)
            oh, ow = (x.h + 2 * pad - size) // stride + 1, (x.w + 2 * pad - size) // stride + 1
            x = Tensor(y, filters, oh, ow)
        elif sec.kind in ("route", "route_lhalf"):
            srcs = [ref(i, k, sec) for k in sec.ints("layers")]
            if not srcs:
                raise GraphoptError(f"line {sec.line}: [{sec.kind}] with no layers")
            if len({(s.h, s.w) for s in srcs}) > 1:
                raise GraphoptError(f"line {sec.line}: [{sec.kind}] joins layers of different sizes")
            groups, group_id = sec.get("groups", 1), sec.get("group_id", 0)
            if sec.kind == "route_lhalf":
                groups, group_id = 2, 0
            parts = []
            for s in srcs:
                if groups > 1:
                    if s.channels % groups or not 0 <= group_id < groups:
                        raise GraphoptError(
                            f"line {sec.line}: groups={groups} group_id={group_id} on {s.channels} channels"
                        )
                    step = s.channels // groups
                    start, end = (
                        b.const(np.array([group_id * step], np.int64), f"{base}/start"),
                        b.const(np.array([(group_id + 1) * step], np.int64), f"{base}/end"),
                    )
                    axis = b.const(np.array([1], np.int64), f"{base}/axis")
                    parts.append(Tensor(b.node("Slice", [s.name, start, end, axis], base), step, s.h, s.w))
                else:
                    parts.append(s)
            name = (
                parts[0].name if len(parts) == 1 else b.node("Concat", [p.name for p in parts], base, axis=1)
            )
            x = Tensor(name, sum(p.channels for p in parts), parts[0].h, parts[0].w)
        elif sec.kind == "shortcut":
            froms = sec.ints("from")
            if len(froms) != 1:
                raise GraphoptError(f"line {sec.line}: [shortcut] from= takes one layer")
            other = ref(i, froms[0], sec)
            if (other.channels, other.h, other.w) != (x.channels, x.h, x.w):
                raise GraphoptError(
                    f"line {sec.line}: [shortcut] adds {other.channels}x{other.h}x{other.w} to {x.channels}x{x.h}x{x.w}"
                )
            act = sec.values.get("activation", "linear")
            if act not in ACTIVATIONS:
                raise GraphoptError(f"line {sec.line}: activation={act!r}")
            x = Tensor(
                b.activation(b.node("Add", [x.name, other.name], base), act, base), x.channels, x.h, x.w
            )
        elif sec.kind == "upsample":
            s = sec.get("stride", 2)
            scales = b.const(np.array([1, 1, s, s], np.float32), f"{base}/scales")
            y = b.node("Resize", [x.name, "", scales], base, mode="nearest")
            x = Tensor(y, x.channels, x.h * s, x.w * s)
        elif sec.kind == "maxpool":
            size, stride = sec.get("size", 2), sec.get("stride", 1)
            pads = [0, 0, 1, 1] if size == 2 and stride == 1 else [(size - 1) // 2] * 4
            y = b.node(
                "MaxPool", [x.name], base, kernel_shape=[size, size], strides=[stride, stride], pads=pads
            )
            oh = (x.h + pads[0] + pads[2] - size) // stride + 1
            ow = (x.w + pads[1] + pads[3] - size) // stride + 1
            x = Tensor(y, x.channels, oh, ow)
        elif sec.kind == "yolo":
            classes = sec.get("classes", 80)
            values = sec.floats("anchors")
            if not values or len(values) % 2:
                raise GraphoptError(
                    f"line {sec.line}: [yolo] anchors needs w,h pairs; got {len(values)} number(s)"
                )
            anchors = np.array(values, np.float32).reshape(-1, 2)
            mask = sec.ints("mask") if "mask" in sec.values else list(range(len(anchors)))
            if any(not 0 <= m < len(anchors) for m in mask):
                raise GraphoptError(f"line {sec.line}: [yolo] mask {mask} outside its {len(anchors)} anchors")
            if nc is not None and classes != nc:
                raise GraphoptError(f"line {sec.line}: [yolo] classes={classes}, an earlier head has {nc}")
            nc = classes
            if x.channels != len(mask) * (5 + classes):
                raise GraphoptError(
                    f"line {sec.line}: [yolo] expects {len(mask)} × (5 + {classes}) = {len(mask) * (5 + classes)} "
                    f"channels, the layer before gives {x.channels} (mismatched filter count)"
                )
            if x.h < 1 or x.w < 1 or h % x.h or w % x.w or h // x.h != w // x.w:
                raise GraphoptError(
                    f"line {sec.line}: [yolo] grid {x.h}x{x.w} does not divide the input {h}x{w}"
                )
            heads.append((x.name, x.h, x.w, h // x.h, anchors[mask], sec))
        outputs.append(x)
    if not heads:
        raise GraphoptError("the cfg has no [yolo] layer: not a detector graphopt can export")
    left = weights.data.size - weights.offset
    if left:
        raise GraphoptError(f".weights has {left} value(s) more than the cfg uses: weights for another cfg")
    decoded = [
        _decode(b, name, gh, gw, stride, anchors, nc, sec, decode)
        for name, gh, gw, stride, anchors, sec in heads
    ]  # type: ignore[arg-type]
    out = b.node("Concat", decoded, "/detect", axis=1) if len(decoded) > 1 else decoded[0]
    b.nodes.append(helper.make_node("Identity", [out], ["output0"], name="/detect/output"))
    total = sum(len(a) * gh * gw for _, gh, gw, _, a, _ in heads)
    graph = helper.make_graph(
        b.nodes,
        "darknet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, total, 5 + nc])],  # type: ignore[operator]
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="graphopt-darknet"
    )
    model.ir_version = min(model.ir_version, 9)
    labels = names or {k: str(k) for k in range(nc)}  # type: ignore[arg-type]
    if len(labels) != nc:
        raise GraphoptError(f"{len(labels)} class names for a model with {nc} classes")
    return DarknetModel(
        model, labels, [s for _, _, _, s, _, _ in heads], (h, w), convs, weights.version, weights.seen
    )


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
) -> dict[str, Any]:
    """Write the ONNX of a Darknet model and check it on onnxruntime (finite outputs of the right shape)."""
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
    meta = {
        keys.NAMES: {str(k): v for k, v in built.names.items()},
        keys.IMGSZ: list(built.imgsz),
        keys.STRIDES: built.strides,
        keys.HEAD: "yolov5",
        keys.PREPROCESS: keys.DEFAULT_PREPROCESS,
        keys.SOURCE: {
            "family": "darknet",
            "cfg": cfg_path.name,
            "weights": weights_path.name,
            "darknet_version": ".".join(map(str, built.version)),
            "images_seen": built.seen,
            "decode": decode,
            "exporter": "graphopt Darknet frontend (no torch)",
        },
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
        "seconds": round(time.perf_counter() - start, 2),
        "notes": [
            "no torch: checked on onnxruntime (finite output of the declared shape); compare with the training "
            "framework's output for bit-level trust"
        ],
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
