"""NCNN int8: graphopt's own writer, its layout check, the layer policy and the CLI's mistakes.

The models are tiny NCNN nets written here with our own format module (no pnnx, no torch, no
../shared): a fp32 pair in, an int8 pair out, loaded by ncnn and compared with the fp32 model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from graphopt.compile import ncnn_int8
from graphopt.compile.ncnn_format import (
    TAG_FP32,
    NcnnFormatError,
    NcnnLayer,
    NcnnModel,
    array_specs,
    bin_bytes,
    check_files,
    param_text,
    read_model,
    read_param,
)
from tests.helpers import one_error_line, run_cli

SIZE = 32
LEAKY = [(9, "2"), (-23310, "1,1.000000e-01")]


def _conv(kind: str, name: str, bottom: str, top: str, cin: int, cout: int, k: int, stride: int, act: list) -> NcnnLayer:
    group = cout if kind == "ConvolutionDepthWise" else 1
    size = cout * (cin // group) * k * k
    params = [(0, str(cout)), (1, str(k)), (11, str(k)), (3, str(stride)), (13, str(stride))]
    params += [(4, str(k // 2)), (14, str(k // 2)), (5, "1"), (6, str(size))]
    params += [(7, str(group))] if group > 1 else []
    return NcnnLayer(kind, name, [bottom], [top], params + act)


def _tiny_layers(second_act: list) -> list[NcnnLayer]:
    return [
        NcnnLayer("Input", "in0", [], ["in0"], [(0, str(SIZE)), (1, str(SIZE)), (2, "3")]),
        _conv("Convolution", "conv0", "in0", "b1", 3, 8, 3, 1, LEAKY),  # 3×3 s1: 6-bit weights
        _conv("ConvolutionDepthWise", "dw1", "b1", "b2", 8, 8, 3, 2, LEAKY),
        _conv("Convolution", "conv2", "b2", "b3", 8, 16, 1, 1, second_act),
        _conv("Convolution", "head", "b3", "out0", 16, 6, 1, 1, []),
    ]


def _with_weights(layers: list[NcnnLayer], seed: int = 0) -> NcnnModel:
    rng = np.random.default_rng(seed)
    model = NcnnModel(layers, blob_count=len(layers))
    for layer in model.layers:
        layer.arrays = [
            (rng.standard_normal(s.count) * (0.3 if s.role == "weight" else 0.05)).astype(np.float32)
            for s in array_specs(layer)
        ]
    return model


@pytest.fixture
def fp32_pair(tmp_path: Path) -> Path:
    """A tiny fp32 NCNN model (conv 3×3 s1 → depthwise s2 → 1×1 → head conv, LeakyReLU) + sidecar."""
    pytest.importorskip("ncnn")
    folder = tmp_path / "fp32"
    folder.mkdir()
    model = _with_weights(_tiny_layers(LEAKY))
    (folder / "tiny.ncnn.param").write_text(param_text(model))
    (folder / "tiny.ncnn.bin").write_bytes(bin_bytes(model, set(), float_tag=TAG_FP32))
    out_hw = SIZE // 2
    sidecar = {
        "format": "ncnn",
        "fp16": False,
        "inputs": [{"name": "in0", "onnx_name": "images", "shape": [1, 3, SIZE, SIZE]}],
        "outputs": [{"name": "out0", "onnx_name": "output0", "shape": [1, 6, out_hw, out_hw]}],
        "metadata": {},
    }
    (folder / "tiny.ncnn.json").write_text(json.dumps(sidecar))
    return folder


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Smooth random pictures (not noise: real activations are spatially correlated)."""
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i}.png"), cv2.resize(small, (80, 60), interpolation=cv2.INTER_CUBIC))
    return folder


def _int8_folder(tmp_path: Path) -> Path:
    """The empty folder the int8 writer writes into (it writes into an existing folder, as convert's)."""
    out = tmp_path / "int8"
    out.mkdir()
    return out


def _outputs(folder: Path, images: Path) -> list[np.ndarray]:
    from runtime.backends import NcnnBackend
    from runtime.preprocess import Preprocess
    from runtime.sources import load_image

    net = NcnnBackend(folder, threads=1)
    pre = Preprocess.from_meta(None)
    return [net.run(pre(load_image(p), (SIZE, SIZE))[0])["output0"] for p in sorted(images.glob("*.png"))]


def test_int8_writer_output_loads_in_ncnn_and_matches_fp32_within_int8_error(
    fp32_pair: Path, images: Path, tmp_path: Path
) -> None:
    out = _int8_folder(tmp_path)
    r = ncnn_int8.write_int8(fp32_pair / "tiny.ncnn.param", out, "tiny", images, "mixed", "kl", samples=6)
    assert r["int8_layers"] == 3 and r["conv_layers"] == 4  # the head conv stays float
    param = read_param(out / "tiny.ncnn.param")
    terms = {layer.name: layer.geti(8, 0) for layer in param.layers if layer.type.startswith("Conv")}
    # conv0 → dw1 → conv2 → (float head): requantize fused where an int8 conv follows
    assert terms == {"conv0": 102, "dw1": 101, "conv2": 2, "head": 0}
    fp16 = tmp_path / "fp16.bin"
    fp16.write_bytes(bin_bytes(read_model(fp32_pair / "tiny.ncnn.param", fp32_pair / "tiny.ncnn.bin"), set()))
    assert (out / "tiny.ncnn.bin").stat().st_size < fp16.stat().st_size
    check_files(out / "tiny.ncnn.param", out / "tiny.ncnn.bin")

    ref, got = _outputs(fp32_pair, images), _outputs(out, images)
    from graphopt.core.compare import cosine

    for a, b in zip(ref, got, strict=True):
        assert not np.allclose(a, b, atol=1e-6)  # it really computed in int8
        # int8 error: steps of 1/127 of a range (1/31 for the 3×3 conv's 6-bit weights), three layers deep
        assert np.abs(a - b).mean() / np.abs(a).mean() < 0.1
    assert cosine(ref, got) > 0.99

    written = read_model(out / "tiny.ncnn.param", out / "tiny.ncnn.bin")
    fp32 = read_model(fp32_pair / "tiny.ncnn.param", fp32_pair / "tiny.ncnn.bin")
    for name, limit in (("conv0", 31), ("conv2", 127)):  # ncnn2table: 6-bit for 3×3 s1 convs
        q = next(x for x in written.layers if x.name == name)
        w = next(x for x in fp32.layers if x.name == name).arrays[0]
        scales = q.arrays[2]
        rows = q.arrays[0].reshape(scales.size, -1)
        assert np.abs(rows).max(1).tolist() == [limit] * scales.size
        assert np.abs(rows / scales[:, None] - w.reshape(rows.shape)).max() <= 0.5 / scales.min() + 1e-6


def test_layout_check_refuses_a_wrong_scale_count(fp32_pair: Path, images: Path, tmp_path: Path) -> None:
    out = _int8_folder(tmp_path)
    ncnn_int8.write_int8(fp32_pair / "tiny.ncnn.param", out, "tiny", images, "all", "aciq", samples=3)
    param, weights = out / "tiny.ncnn.param", out / "tiny.ncnn.bin"
    model = read_param(param)
    offset = 0
    for layer in model.layers:  # the end of conv0's weight scales
        for spec in array_specs(layer):
            offset += (4 + (spec.count + 3) // 4 * 4) if spec.tagged else 4 * spec.count
            if layer.name == "conv0" and spec.role == "weight_scales":
                break
        else:
            continue
        break
    data = weights.read_bytes()
    weights.write_bytes(data[: offset - 4] + data[offset:])  # one weight scale fewer
    with pytest.raises(NcnnFormatError) as exc:
        check_files(param, weights)
    assert "\n" not in str(exc.value) and "tiny.ncnn.bin" in str(exc.value)

    weights.write_bytes(data)
    check_files(param, weights)
    text = param.read_text()  # the depthwise layer claims one scale (8=2) but holds one per group
    param.write_text(text.replace("8=101", "8=102").replace("8=1\n", "8=2\n"))
    with pytest.raises(NcnnFormatError):
        check_files(param, weights)


def test_verification_beyond_the_bound_fails_and_writes_nothing(
    fp32_pair: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphopt.core.errors import VerificationError

    monkeypatch.setattr(ncnn_int8, "MIN_COSINE", 1.0 + 1e-6)  # no int8 model is exact
    out = _int8_folder(tmp_path)
    with pytest.raises(VerificationError, match="nothing was written"):
        ncnn_int8.write_int8(fp32_pair / "tiny.ncnn.param", out, "tiny", images, "mixed", "aciq", samples=2)
    assert list(out.iterdir()) == []


def _policy_model(act_layer: str | None) -> NcnnModel:
    """conv → [Swish] → conv → head conv; `act_layer=None`: LeakyReLU fused into the first conv."""
    first = _conv("Convolution", "c0", "in0", "a", 3, 8, 3, 1, [] if act_layer else LEAKY)
    layers = [NcnnLayer("Input", "in0", [], ["in0"], []), first]
    if act_layer:
        layers.append(NcnnLayer(act_layer, "act0", ["a"], ["a2"], []))
    layers += [
        _conv("Convolution", "c1", "a2" if act_layer else "a", "b", 8, 8, 3, 1, LEAKY),
        _conv("Convolution", "head", "b", "out0", 8, 4, 1, 1, []),
    ]
    return NcnnModel(layers, len(layers))


def test_policy_keeps_swish_followed_convs_fp16_and_quantizes_fused_activations() -> None:
    swish = {d.layer: d for d in ncnn_int8.decide_layers(_policy_model("Swish"), "mixed")}
    assert not swish["c0"].int8 and "Swish" in swish["c0"].reason
    assert swish["c1"].int8 and not swish["head"].int8 and "head" in swish["head"].reason

    leaky = {d.layer: d for d in ncnn_int8.decide_layers(_policy_model(None), "mixed")}
    assert leaky["c0"].int8 and leaky["c0"].requantize and "LeakyReLU" in leaky["c0"].reason
    assert not leaky["head"].int8

    forced = {d.layer: d for d in ncnn_int8.decide_layers(_policy_model("Swish"), "all")}
    assert forced["c0"].int8 and forced["c1"].int8 and not forced["head"].int8
    assert not forced["c0"].requantize  # Swish sits between: no conv reads c0's output directly


def test_int8_cli_mistakes_are_one_line(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not used")
    assert "--data" in one_error_line(run_cli("convert", model, "--to", "ncnn", "--int8", "-o", tmp_path / "o"))
    one_error_line(run_cli("convert", model, "--to", "ncnn", "--int8", "most", "-o", tmp_path / "o", "--data", "x"))
    one_error_line(run_cli("convert", model, "--to", "ncnn", "--int8", "--data", tmp_path / "none", "-o", tmp_path / "o"))
    line = one_error_line(run_cli("compile", model, "--target", "pi5-ort", "--int8", "-o", tmp_path / "c"))
    assert "--int8 is for NCNN targets" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_kl_threshold_clips_a_sparse_tail_and_keeps_a_uniform_range() -> None:
    from graphopt.compile.ncnn_calibrate import HISTOGRAM_BINS, aciq_threshold, kl_threshold

    rng = np.random.default_rng(0)

    def hist(values: np.ndarray) -> tuple[np.ndarray, float]:
        a = np.abs(values)
        idx = np.minimum((a / a.max() * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
        return np.bincount(idx, minlength=HISTOGRAM_BINS), float(a.max())

    laplace = np.append(rng.laplace(0, 1, 200_000), 60.0)  # one outlier stretches the range
    h, absmax = hist(laplace)
    assert kl_threshold(h, absmax) < 0.3 * absmax
    # ACIQ sees only absmax and the element count: the larger the blob, the harder it clips
    assert aciq_threshold(absmax, 10**6) < aciq_threshold(absmax, 10**4) < absmax
    h, absmax = hist(rng.uniform(-1, 1, 200_000))  # nothing to clip
    assert kl_threshold(h, absmax) > 0.9 * absmax


def test_policy_sees_silu_spelled_as_x_times_sigmoid_x() -> None:
    layers = [
        NcnnLayer("Input", "in0", [], ["in0"], []),
        _conv("Convolution", "c0", "in0", "a", 3, 8, 3, 1, []),
        NcnnLayer("Split", "split0", ["a"], ["a0", "a1"], []),
        NcnnLayer("Sigmoid", "sig0", ["a0"], ["s"], []),
        NcnnLayer("BinaryOp", "mul0", ["a1", "s"], ["m"], [(0, "2")]),
        _conv("Convolution", "c1", "m", "b", 8, 8, 3, 1, LEAKY),
        _conv("Convolution", "head", "b", "out0", 8, 4, 1, 1, []),
    ]
    decisions = {d.layer: d for d in ncnn_int8.decide_layers(NcnnModel(layers, len(layers)), "mixed")}
    assert not decisions["c0"].int8 and decisions["c0"].rule == "swish"
    layers[4].params = [(0, "0")]  # x + sigmoid(x) is no SiLU: the conv is kept for another reason
    decisions = {d.layer: d for d in ncnn_int8.decide_layers(NcnnModel(layers, len(layers)), "mixed")}
    assert not decisions["c0"].int8 and decisions["c0"].rule == "no-fusion"


def test_convert_int8_failing_verification_exits_with_one_line_and_leaves_nothing(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import REPO, need_pnnx

    need_pnnx()
    monkeypatch.setattr(ncnn_int8, "MIN_COSINE", 1.0 + 1e-6)  # no int8 model is exact
    out = tmp_path / "ncnn"
    calib = REPO / "graphopt" / "assets" / "calib"
    r = run_cli("convert", demo, "--to", "ncnn", "--int8", "all", "--samples", "2", "--data", calib, "-o", out)
    assert "nothing was written" in one_error_line(r, code=1)  # a failed check, as convert's fp32 check
    assert not out.exists() or list(out.iterdir()) == []


def test_auto_calibration_keeps_the_table_that_agrees_best_with_fp32(
    fp32_pair: Path, images: Path, tmp_path: Path
) -> None:
    out = _int8_folder(tmp_path)
    r = ncnn_int8.write_int8(fp32_pair / "tiny.ncnn.param", out, "tiny", images, "all", "auto", samples=4)
    compared = r["calibration_compared"]
    assert set(compared) == {"kl", "aciq"}
    error = {m: 1 - c["cosine"] for m, c in compared.items()}  # the tiny net has no YOLO head: cosine decides
    assert r["calibration"] == min(error, key=error.get)
    assert json.loads((out / "tiny.ncnn.json").read_text())["int8"]["calibration"] == r["calibration"]
