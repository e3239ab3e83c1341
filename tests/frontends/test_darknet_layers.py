"""Each Darknet layer graphopt reads, on a tiny cfg, against Darknet's own arithmetic: numpy transcriptions
of AlexeyAB darknet's CPU loops (src/blas.c reorg_cpu, shortcut_multilayer_cpu, upsample_cpu;
maxpool_layer.c, avgpool_layer.c, scale_channels_layer.c, sam_layer.c, route_layer.c), run on the flat
C×H×W buffers as Darknet runs them. No network, no ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from frontends.darknet import build, read_weights, weights_layout
from graphopt.core.model import op_histogram
from graphopt.core.ort_session import run
from graphopt.prune.alloc import with_outputs
from tests.helpers import run_cli, write_darknet_weights

FLT_MAX = np.finfo(np.float32).max
NET = "[net]\nwidth={w}\nheight={h}\nchannels=3\n{extra}\n"
STEM = "[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\nactivation=linear\n"  # layer 0: 8×(h/2)×(w/2)
# The head reads layer 0 again, so the layers under test may have any size.
HEAD = """
[route]
layers=0

[convolutional]
size=1
filters=18
activation=linear

[yolo]
mask=0,1,2
anchors=4,4, 8,8, 12,12
classes=1
num=3
"""


def conv(filters: int, size: int = 1, stride: int = 1, pad: int = 1, act: str = "linear") -> str:
    return (
        f"\n[convolutional]\nfilters={filters}\nsize={size}\nstride={stride}\npad={pad}\nactivation={act}\n"
    )


class Built:
    """A tiny cfg built with seeded weights; `outputs(i, …)` runs it and returns layers' tensors as
    Darknet holds them (C×H×W, batch dropped)."""

    def __init__(self, tmp_path: Path, body: str, head_from: int = 0) -> None:
        self.cfg = (
            NET.format(w=32, h=32, extra="") + STEM + body + HEAD.replace("layers=0", f"layers={head_from}")
        )
        self.weights = read_weights(write_darknet_weights(tmp_path / "t.weights", self.cfg))
        self.built = build(self.cfg, self.weights)
        self.x = np.random.default_rng(7).random((1, 3, 32, 32), dtype=np.float32)

    def outputs(self, *layers: int) -> list[np.ndarray]:
        names = list(dict.fromkeys(self.built.layers[i] for i in layers))
        got = run(with_outputs(self.built.model, names), [{"images": self.x}])[0]
        return [got[self.built.layers[i]][0] for i in layers]

    def shortcut_weights(self) -> np.ndarray:
        """The values the `.weights` file holds for the (first) weighted [shortcut]."""
        offset = 0
        for block in weights_layout(self.cfg):
            if block.role == "shortcut":
                return self.weights.data[offset : offset + block.size]
            offset += block.size
        raise AssertionError("no shortcut weights")


# -- Darknet's loops, transcribed ------------------------------------------------------------------


def reorg_cpu(x: np.ndarray, w: int, h: int, c: int, stride: int, forward: bool) -> np.ndarray:
    """blas.c reorg_cpu(x, w, h, c, batch=1, stride, forward, out) on flat buffers."""
    out = np.zeros(x.size, np.float32)
    x = x.reshape(-1)
    in_c = c // (stride * stride)
    k, j, i = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    in_index = i + w * (j + h * k)
    c2, offset = k % in_c, k // in_c
    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
    out_index = w2 + w * stride * (h2 + h * stride * c2)
    if forward:
        out[out_index] = x[in_index]
    else:
        out[in_index] = x[out_index]
    return out


def shortcut_multilayer(
    inp: np.ndarray, adds: list[np.ndarray], weights: np.ndarray | None, weights_type: str, norm: str
) -> np.ndarray:
    """blas.c shortcut_multilayer_cpu for batch 1: the flat index rule `src_i < add_outputs` is what adds
    only the overlapping channels."""
    c, h, w = inp.shape
    src = inp.reshape(-1)
    n = len(adds)
    nweights = 0 if weights is None else weights.size
    layer_step = nweights // (n + 1) if nweights else 0
    step = src.size // layer_step if nweights else 0
    out = np.empty_like(src)
    for src_i in range(src.size):
        scale = [1.0] * (n + 1)
        if weights is not None:
            vals = [float(weights[src_i // step + i * layer_step]) for i in range(n + 1)]
            scale = vals
            if norm == "relu":
                total = 0.0001 + sum(max(v, 0.0) for v in vals)
                scale = [max(v, 0.0) / total for v in vals]
            elif norm == "softmax":
                max_val = max(vals)
                total = 0.0001 + sum(float(np.exp(v - max_val)) for v in vals)
                scale = [float(np.exp(v - max_val)) / total for v in vals]
        out[src_i] = src[src_i] * scale[0]
        for i, add in enumerate(adds):
            flat = add.reshape(-1)
            if src_i < flat.size:  # the flat-index rule: only the overlapping channels
                out[src_i] += flat[src_i] * scale[i + 1]
    return out.reshape(c, h, w)


def maxpool(x: np.ndarray, size: int, stride_y: int, stride_x: int, padding: int) -> np.ndarray:
    """maxpool_layer.c forward_maxpool_layer: window from -padding/2, outside pixels are -FLT_MAX."""
    c, h, w = x.shape
    oh, ow = (h + padding - size) // stride_y + 1, (w + padding - size) // stride_x + 1
    offset = -(padding // 2)
    out = np.full((c, oh, ow), -FLT_MAX, np.float32)
    for n in range(size):
        for m in range(size):
            for i in range(oh):
                for j in range(ow):
                    cur_h, cur_w = offset + i * stride_y + n, offset + j * stride_x + m
                    if 0 <= cur_h < h and 0 <= cur_w < w:
                        out[:, i, j] = np.maximum(out[:, i, j], x[:, cur_h, cur_w])
    return out


def upsample_cpu(
    small: np.ndarray, big: np.ndarray | None, stride: int, forward: bool, scale: float
) -> np.ndarray:
    """blas.c upsample_cpu(in=small, w, h, c, batch=1, stride, forward, scale, out=big)."""
    c, h, w = small.shape
    src = small.reshape(-1).copy()
    dst = np.zeros(c * h * w * stride * stride, np.float32) if big is None else big.reshape(-1)
    for k in range(c):
        for j in range(h * stride):
            for i in range(w * stride):
                in_index = k * w * h + (j // stride) * w + i // stride
                out_index = k * w * h * stride * stride + j * w * stride + i
                if forward:
                    dst[out_index] = scale * src[in_index]
                else:
                    src[in_index] += scale * dst[out_index]
    return dst.reshape(c, h * stride, w * stride) if forward else src.reshape(c, h, w)


def space_to_depth(x: np.ndarray, s: int) -> np.ndarray:
    """ONNX SpaceToDepth on C×H×W: out[(dy·s + dx)·C + c, y, x] = in[c, y·s + dy, x·s + dx]."""
    c, h, w = x.shape
    return x.reshape(c, h // s, s, w // s, s).transpose(2, 4, 0, 1, 3).reshape(c * s * s, h // s, w // s)


# -- the layers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reverse", "filters"),
    [("reorg3d", 0, 8), ("reorg3d", 1, 16), ("reorg", 0, 8), ("reorg", 1, 8)],
)
def test_reorg_layers_follow_darknets_index_map(
    tmp_path: Path, kind: str, reverse: int, filters: int
) -> None:
    """[reorg3d] is Darknet's REORG (reorg_cpu with the output's sizes), [reorg] its REORG_OLD (the input's
    sizes): the YOLOv2 passthrough is not the space-to-depth of the tensor."""
    t = Built(tmp_path, conv(filters) + f"\n[{kind}]\nstride=2\nreverse={reverse}\n")
    x, y = t.outputs(1, 2)
    c, h, w = x.shape  # 16×16
    if kind == "reorg3d" and not reverse:
        want = reorg_cpu(x, w // 2, h // 2, c * 4, 2, forward=False).reshape(c * 4, h // 2, w // 2)
        np.testing.assert_array_equal(want, space_to_depth(x, 2))  # Darknet's REORG is ONNX's order
    elif kind == "reorg3d":
        want = reorg_cpu(x, w * 2, h * 2, c // 4, 2, forward=True).reshape(c // 4, h * 2, w * 2)
    elif not reverse:
        want = reorg_cpu(x, w, h, c, 2, forward=False).reshape(c * 4, h // 2, w // 2)
        assert not np.array_equal(want, space_to_depth(x, 2))
    else:
        want = reorg_cpu(x, w, h, c, 2, forward=True).reshape(c // 4, h * 2, w * 2)
    assert y.shape == want.shape
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize(
    ("weights_type", "norm"),
    [("none", "none"), ("per_feature", "none"), ("per_channel", "relu"), ("per_feature", "softmax")],
)
def test_shortcut_adds_the_overlapping_channels_with_darknets_weights(
    tmp_path: Path, weights_type: str, norm: str
) -> None:
    """yolov3-tiny-prn's partial residual: an input with more channels gives its first ones, one with
    fewer adds into the first ones; weighted inputs scale by weights from the .weights file."""
    options = "" if weights_type == "none" else f"weights_type={weights_type}\nweights_normalization={norm}\n"
    body = conv(6) + conv(4) + f"\n[shortcut]\nfrom=-2,-3\nactivation=linear\n{options}"  # layers 1, 2, 3
    t = Built(tmp_path, body)
    stem, six, four, out = t.outputs(0, 1, 2, 3)
    weights = None if weights_type == "none" else t.shortcut_weights()
    if weights is not None:
        assert weights.size == (3 * 4 if weights_type == "per_channel" else 3)
    want = shortcut_multilayer(four, [six, stem], weights, weights_type, norm)
    assert out.shape == (4, 16, 16)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_shortcut_into_more_channels_keeps_the_rest(tmp_path: Path) -> None:
    t = Built(tmp_path, conv(4) + conv(12) + "\n[shortcut]\nfrom=-2\nactivation=leaky\n")
    four, twelve, out = t.outputs(1, 2, 3)
    want = shortcut_multilayer(twelve, [four], None, "none", "none")
    np.testing.assert_allclose(out, np.where(want > 0, want, 0.1 * want), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[4:], np.where(twelve[4:] > 0, twelve[4:], 0.1 * twelve[4:]))


@pytest.mark.parametrize(
    ("size", "stride", "padding"),
    [(2, 1, None), (2, 2, None), (3, 2, None), (5, 1, None), (13, 1, None), (3, 1, 0), (3, 2, 3)],
)
@pytest.mark.parametrize("side", [16, 7])
def test_maxpool_pads_as_darknet(
    tmp_path: Path, size: int, stride: int, padding: int | None, side: int
) -> None:
    """Darknet's window starts padding/2 (default (size−1)/2) before the edge: size=2 stride=1 pads right
    and bottom (yolov3-tiny), SPP keeps the size, odd inputs round as Darknet does."""
    body = conv(8, 3, 2, pad=0) if side == 7 else ""  # 16 → 7
    pool = f"\n[maxpool]\nsize={size}\nstride={stride}\n" + (
        f"padding={padding}\n" if padding is not None else ""
    )
    t = Built(tmp_path, body + pool)
    i = 1 if side == 7 else 0
    x, y = t.outputs(i, i + 1)
    assert x.shape[1:] == (side, side)
    want = maxpool(x, size, stride, stride, size - 1 if padding is None else padding)
    assert y.shape == want.shape
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize(("stride", "scale"), [(2, 1.0), (3, 1.0), (2, 0.5), (-2, 1.0), (-4, 0.25)])
def test_upsample_any_stride_and_darknets_downsample(tmp_path: Path, stride: int, scale: float) -> None:
    t = Built(tmp_path, f"\n[upsample]\nstride={stride}\nscale={scale}\n")
    x, y = t.outputs(0, 1)
    if stride > 0:
        want = upsample_cpu(x, None, stride, forward=True, scale=scale)
    else:  # reverse: upsample_cpu(l.output, out_w, out_h, …, forward=0, scale, net.input)
        s = -stride
        small = np.zeros((x.shape[0], x.shape[1] // s, x.shape[2] // s), np.float32)
        want = upsample_cpu(small, x, s, forward=False, scale=scale)
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_avgpool_is_the_global_average(tmp_path: Path) -> None:
    t = Built(tmp_path, "\n[avgpool]\n")
    x, y = t.outputs(0, 1)
    assert y.shape == (8, 1, 1)
    np.testing.assert_allclose(y[:, 0, 0], x.reshape(8, -1).sum(1) / x[0].size, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("scale_wh", "act"), [(0, "linear"), (1, "linear"), (0, "leaky")])
def test_scale_channels_per_channel_and_per_pixel(tmp_path: Path, scale_wh: int, act: str) -> None:
    """enet-coco's squeeze-excitation: the `from` layer times the layer before (C×1×1, or 1×H×W with
    scale_wh)."""
    squeeze = (
        "\n[avgpool]\n" + conv(8, act="logistic")
        if not scale_wh
        else conv(1, act="logistic") + "\n[dropout]\n"
    )
    body = squeeze + f"\n[scale_channels]\nfrom=-3\nscale_wh={scale_wh}\nactivation={act}\n"
    t = Built(tmp_path, body)
    src, scale, out = t.outputs(0, 2, 3)
    size = src.size
    channel_size = src.shape[1] * src.shape[2]
    flat_scale = scale.reshape(-1)
    index = np.arange(size)
    # forward_scale_channels_layer for batch 1 (batch_size = the whole output)
    pick = index % channel_size if scale_wh else index // channel_size
    want = (flat_scale[pick] * src.reshape(-1)).reshape(src.shape)
    if act == "leaky":
        want = np.where(want > 0, want, 0.1 * want)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)


def test_sam_multiplies_elementwise(tmp_path: Path) -> None:
    t = Built(tmp_path, conv(8, act="logistic") + "\n[sam]\nfrom=-2\n")
    src, gate, out = t.outputs(0, 1, 2)
    np.testing.assert_allclose(out, src * gate, rtol=1e-6, atol=1e-7)


def test_route_takes_one_group_of_each_input(tmp_path: Path) -> None:
    t = Built(tmp_path, conv(6) + "\n[route]\nlayers=-1,-2\ngroups=2\ngroup_id=1\n")
    stem, six, out = t.outputs(0, 1, 2)
    # forward_route_layer: from each input, input_size/groups values from part·group_id
    parts = [s.reshape(-1)[s.size // 2 :] for s in (six, stem)]
    np.testing.assert_array_equal(out, np.concatenate(parts).reshape(3 + 4, 16, 16))


def test_yolo_reads_num_and_mask_as_darknet(tmp_path: Path) -> None:
    """No mask: every one of `num` anchors; anchors past num·2 are not read; classes defaults to 20."""
    cfg = (
        NET.format(w=32, h=32, extra="") + STEM + conv(2 * 25) + "\n[yolo]\nanchors=4,4, 8,8, 99,99\nnum=2\n"
    )
    built = build(cfg, read_weights(write_darknet_weights(tmp_path / "w.weights", cfg)))
    assert len(built.names) == 20
    shape = [d.dim_value for d in built.model.graph.output[0].type.tensor_type.shape.dim]
    assert shape == [1, 2 * 16 * 16, 25]


def test_weighted_shortcut_weights_follow_the_layer_before(tmp_path: Path) -> None:
    cfg = (
        NET.format(w=32, h=32, extra="")
        + STEM
        + conv(4)
        + "\n[shortcut]\nfrom=-2\nweights_type=per_channel\n"
        + conv(4)
        + HEAD
    )
    roles = [(b.layer, b.role, b.shape) for b in weights_layout(cfg)]
    assert roles[:7] == [
        (0, "bias", (8,)),
        (0, "kernel", (8, 3, 3, 3)),
        (1, "bias", (4,)),
        (1, "kernel", (4, 8, 1, 1)),
        (2, "shortcut", (8,)),  # (1 + one from-layer) × 4 output channels
        (3, "bias", (4,)),
        (3, "kernel", (4, 4, 1, 1)),
    ]


def test_new_layers_survive_the_lossless_recipe(tmp_path: Path) -> None:
    """Every new layer in one graph, then `lossless` (checked equal on seeded inputs by the pipeline)."""
    from graphopt.passes.pipeline import Pipeline

    body = (
        conv(8, act="mish")
        + "\n[dropout]\nprobability=.1\n"
        + "\n[avgpool]\n"
        + conv(8, act="logistic")
        + "\n[scale_channels]\nfrom=-4\n"
        + "\n[sam]\nfrom=-5\n"
        + conv(4)
        + "\n[shortcut]\nfrom=-2\nweights_type=per_feature\nweights_normalization=softmax\n"
        + "\n[reorg3d]\nstride=2\n"
        + "\n[reorg]\nstride=2\n"
        + "\n[upsample]\nstride=4\n"
        + "\n[maxpool]\nsize=2\nstride=1\n"
    )
    t = Built(tmp_path, body, head_from=-1)  # the head reads the last layer: nothing here is dead
    result = Pipeline.from_recipe("lossless").run(t.built.model)
    assert all(r.verification is None or r.verification["ok"] for r in result.reports)
    assert "BatchNormalization" not in op_histogram(result.model)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            conv(8, 3) + "dilation=2\n",
            "line 13: [convolutional] dilation=2: graphopt does not build this option",
        ),
        ("\n[maxpool]\nsize=2\nmaxpool_depth=1\n", "[maxpool] maxpool_depth=1"),
        ("\n[local_avgpool]\nsize=2\n", "line 13: unknown layer [local_avgpool]"),
        ("\n[sam]\nfrom=-1\nactivation=mish\n", "[sam] activation='mish'"),
        ("\n[shortcut]\nfrom=-1\nweights_type=per_pixel\n", "weights_type='per_pixel'"),
        ("\n[reorg]\nstride=3\n", "stride=3 does not divide its 8x16x16 input"),
        ("\n[upsample]\nstride=100000\n", "would output 8x1600000x1600000 values per image: too large"),
        ("\n[maxpool]\nsize=100000\nstride=1\n", "size=100000: graphopt reads windows up to 512"),
    ],
)
def test_what_graphopt_does_not_build_is_one_error_line(tmp_path: Path, body: str, message: str) -> None:
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(NET.format(w=32, h=32, extra="") + STEM + body + HEAD)
    # the refusal comes before the layer reads its weights: weights of the cfg without it do
    weights = write_darknet_weights(tmp_path / "w.weights", NET.format(w=32, h=32, extra="") + STEM + HEAD)
    r = run_cli("export", cfg, "--weights", weights, "-o", tmp_path / "o.onnx")
    assert r.code == 2 and message in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize(
    ("net", "yolo", "message"),
    [
        ("width=0", "", "[net] width=0: the input side must be 1..4096 pixels"),
        ("width=100000", "", "[net] width=100000: the input side must be 1..4096"),
        ("", "anchors=4,4, 8,8, 12", "anchors= holds 5 numbers: anchors are w,h pairs"),
        ("", "anchors=4,4, 8,8", "num=3 needs 6 anchor numbers"),
    ],
)
def test_net_and_yolo_bounds_are_one_error_line(tmp_path: Path, net: str, yolo: str, message: str) -> None:
    text = NET.format(w=32, h=32, extra="") + STEM + HEAD
    good = write_darknet_weights(tmp_path / "w.weights", text)
    if net:
        text = text.replace("width=32", net)
    if yolo:
        text = text.replace("anchors=4,4, 8,8, 12,12", yolo)
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(text)
    r = run_cli("export", cfg, "--weights", good, "-o", tmp_path / "o.onnx")
    assert r.code == 2 and message in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1


def test_layers_that_would_read_the_activated_head_are_refused(tmp_path: Path) -> None:
    text = NET.format(w=32, h=32, extra="") + STEM + HEAD
    weights = write_darknet_weights(tmp_path / "w.weights", text)
    for tail, message in (
        ("\n[route]\nlayers=-1\n", "refers to layer 3, a [yolo] layer"),
        ("\n[maxpool]\nsize=2\nstride=2\n", "follows a [yolo] layer directly"),
    ):
        cfg = tmp_path / "bad.cfg"
        cfg.write_text(text + tail)
        r = run_cli("export", cfg, "--weights", weights, "-o", tmp_path / "o.onnx")
        assert r.code == 2 and message in r.err, r.err
