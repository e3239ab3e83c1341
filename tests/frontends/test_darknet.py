"""Darknet `.cfg` + `.weights` frontend (no torch): parsing, weights layout, the decode formulas, Mish
at both opsets, the lossless recipe on the result, and broken inputs — on a small cfg written here.
The comparison with WongKinYiu's PyTorch_YOLOv4 on its real cfgs is tests/test_real_darknet.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from frontends.darknet import DARKNET_BN_EPS, Weights, build, parse_cfg, read_weights
from graphopt.core.model import op_histogram
from graphopt.core.ort_session import run
from graphopt.passes.pipeline import Pipeline
from graphopt.prune.alloc import with_outputs
from tests.helpers import run_cli, sha256

NC = 2
CFG = f"""
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=mish

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[route]
layers=-1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=swish

[shortcut]
from=-1
activation=linear

[route]
layers=-1,-4

[convolutional]
size=1
stride=1
pad=1
filters={3 * (5 + NC)}
activation=linear

[yolo]
mask=3,4,5
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes={NC}
num=6
scale_x_y=1.05

[route]
layers=-3

[upsample]
stride=2

[convolutional]
size=1
stride=1
pad=1
filters={3 * (5 + NC)}
activation=logistic

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes={NC}
num=6
scale_x_y=2.0
new_coords=1
"""


def _conv_shapes(cfg: str) -> list[tuple[bool, int, int, int]]:
    """(batch_normalize, filters, in_channels, size) of each conv, tracked as the frontend does."""
    shapes, channels, outs = [], 3, []
    for sec in parse_cfg(cfg)[1:]:
        v = sec.values
        if sec.kind == "convolutional":
            shapes.append((v.get("batch_normalize") == "1", int(v["filters"]), channels, int(v["size"])))
            channels = int(v["filters"])
        elif sec.kind == "route":
            ids = [int(k) for k in v["layers"].split(",")]
            chans = [outs[len(outs) + k] if k < 0 else outs[k] for k in ids]
            channels = sum(chans) // int(v.get("groups", 1))
        outs.append(channels)
    return shapes


def write_weights(path: Path, cfg: str, seed: int = 0, extra: int = 0, drop: int = 0) -> Path:
    """Darknet layout: header 0.2.5 + int64 seen, then per conv BN (beta, gamma, mean, var) or bias, then filters."""
    rng = np.random.default_rng(seed)
    parts = [np.array([0, 2, 5], "<i4").tobytes(), np.array([1234], "<i8").tobytes()]
    for bn, filters, cin, size in _conv_shapes(cfg):
        if bn:
            parts += [rng.uniform(-0.1, 0.1, filters), rng.uniform(0.5, 1.5, filters)]
            parts += [rng.uniform(-0.1, 0.1, filters), rng.uniform(0.5, 1.5, filters)]
        else:
            parts.append(rng.uniform(-0.5, 0.5, filters))
        parts.append(rng.normal(0, (1 / (cin * size * size)) ** 0.5, filters * cin * size * size))
    blob = b"".join(p if isinstance(p, bytes) else p.astype("<f4").tobytes() for p in parts)
    blob += rng.normal(size=extra).astype("<f4").tobytes()
    path.write_bytes(blob[: len(blob) - 4 * drop] if drop else blob)
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(CFG)
    return cfg, write_weights(tmp_path / "tiny.weights", CFG)


def test_export_writes_the_training_form_with_a_decoded_output(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg, weights = files
    before = sha256(weights)
    out = tmp_path / "tiny.onnx"
    r = run_cli("export", cfg, "--weights", weights, "-o", out, "--json")
    assert r.code == 0, r.err
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    ops = op_histogram(model)
    assert ops["Conv"] == 5 and ops["BatchNormalization"] == 3 and ops["LeakyRelu"] == 1
    # opset 17 has no Mish: Softplus · Tanh · Mul
    assert ops["Softplus"] == 1 and ops["Tanh"] == 1
    # 64 px input: the first head's grid is 16x16 (stride 4), the upsampled one's 32x32 (stride 2)
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [
        1,
        3 * (16 * 16 + 32 * 32),
        5 + NC,
    ]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["graphopt.head"] == "yolov5" and meta["graphopt.strides"] == "[4, 2]"
    assert (
        '"family": "darknet"' in meta["graphopt.source"] and '"images_seen": 1234' in meta["graphopt.source"]
    )
    assert sha256(weights) == before


@pytest.mark.parametrize(
    ("letter_box", "flag", "mode", "pad"),
    [
        (None, None, "resize", None),  # Darknet resizes unless the cfg says letter_box=1
        ("1", None, "letterbox", 127),  # Darknet's letterbox fills with 0.5 grey
        ("1", "--no-letterbox", "resize", None),
        (None, "--letterbox", "letterbox", 127),
        ("0", None, "resize", None),
    ],
)
def test_export_records_the_cfgs_preprocessing(
    files: tuple[Path, Path],
    tmp_path: Path,
    letter_box: str | None,
    flag: str | None,
    mode: str,
    pad: int | None,
) -> None:
    cfg, weights = files
    if letter_box is not None:
        cfg.write_text(CFG.replace("channels=3", f"channels=3\nletter_box={letter_box}"))
    out = tmp_path / "m.onnx"
    r = run_cli("export", cfg, "--weights", weights, "-o", out, "--json", *([flag] if flag else []))
    assert r.code == 0, r.err
    assert json.loads(r.out)["preprocess"] == mode
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    preprocess = json.loads(meta["graphopt.preprocess"])
    assert preprocess["mode"] == mode
    if pad is not None:
        assert preprocess["letterbox_pad"] == pad
    assert json.loads(meta["graphopt.source"])["letter_box"] == (letter_box == "1")


def test_letterbox_flags_are_for_darknet_only(tmp_path: Path) -> None:
    r = run_cli("export", tmp_path / "model.pt", "--no-letterbox", "-o", tmp_path / "o.onnx")
    assert r.code == 2 and "--letterbox/--no-letterbox are for a Darknet .cfg" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_decode_matches_darknet_formulas(files: tuple[Path, Path]) -> None:
    cfg, weights = files
    built = build(cfg.read_text(), read_weights(weights))
    convs = [n for n in built.model.graph.node if n.op_type == "Conv"]
    head16 = convs[3].output[0]  # linear conv before the first [yolo]
    head8 = next(
        n for n in built.model.graph.node if n.op_type == "Sigmoid" and n.input[0] == convs[4].output[0]
    )
    model = with_outputs(built.model, [head16, head8.output[0]])
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    got = run(model, [{"images": x}])[0]
    anchors = np.array([10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319], np.float32).reshape(6, 2)

    def grid(g: int) -> np.ndarray:
        yv, xv = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        return np.stack((xv, yv), -1)[None, None]

    def sig(v: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-v))

    t = got[head16].reshape(1, 3, 5 + NC, 16, 16).transpose(0, 1, 3, 4, 2)  # scale_x_y 1.05, exp wh
    xy = (sig(t[..., :2]) * 1.05 - 0.025 + grid(16)) * 4
    wh = np.exp(t[..., 2:4]) * anchors[3:6].reshape(1, 3, 1, 1, 2)
    want16 = np.concatenate([xy, wh, sig(t[..., 4:])], -1).reshape(1, -1, 5 + NC)
    t = (
        got[head8.output[0]].reshape(1, 3, 5 + NC, 32, 32).transpose(0, 1, 3, 4, 2)
    )  # new_coords: logistic already
    xy = (t[..., :2] * 2.0 - 0.5 + grid(32)) * 2
    wh = (2 * t[..., 2:4]) ** 2 * anchors[0:3].reshape(1, 3, 1, 1, 2)
    want8 = np.concatenate([xy, wh, t[..., 4:]], -1).reshape(1, -1, 5 + NC)
    np.testing.assert_allclose(got["output0"], np.concatenate([want16, want8], 1), rtol=1e-5, atol=1e-4)


def test_mish_at_opset_18_equals_the_decomposition(files: tuple[Path, Path]) -> None:
    cfg, weights = files
    a = build(cfg.read_text(), read_weights(weights), opset=17).model
    b = build(cfg.read_text(), read_weights(weights), opset=18).model
    assert "Mish" in op_histogram(b) and "Mish" not in op_histogram(a)
    x = {"images": np.random.default_rng(2).random((1, 3, 64, 64), dtype=np.float32)}
    np.testing.assert_allclose(run(a, [x])[0]["output0"], run(b, [x])[0]["output0"], rtol=1e-5, atol=1e-4)


def test_lossless_folds_every_batchnorm(files: tuple[Path, Path]) -> None:
    cfg, weights = files
    model = build(cfg.read_text(), read_weights(weights)).model
    result = Pipeline.from_recipe("lossless").run(model)  # verified equal on seeded inputs
    assert "BatchNormalization" not in op_histogram(result.model)
    assert all(r.verification is None or r.verification["ok"] for r in result.reports)


def test_dropout_is_the_identity_and_still_counts_as_a_layer(tmp_path: Path) -> None:
    """Yolo-Fastest's `[dropout]` between layers: the same graph output as without it, and route/shortcut
    offsets that count it (a relative offset across it) still land on the layers Darknet means."""
    with_dropout = CFG.replace(
        "[maxpool]\nsize=2\nstride=2\n", "[maxpool]\nsize=2\nstride=2\n\n[dropout]\nprobability=.15\n"
    ).replace("[route]\nlayers=-1,-4", "[dropout]\nprobability=.15\n\n[route]\nlayers=-1,-5")
    assert with_dropout.count("[dropout]") == 2
    weights = read_weights(write_weights(tmp_path / "w.weights", CFG))
    plain = build(CFG, weights).model
    weights.offset = 0
    dropped = build(with_dropout, weights).model
    assert op_histogram(dropped) == op_histogram(plain)
    x = {"images": np.random.default_rng(3).random((1, 3, 64, 64), dtype=np.float32)}
    np.testing.assert_array_equal(run(dropped, [x])[0]["output0"], run(plain, [x])[0]["output0"])


def test_weights_header_versions(tmp_path: Path) -> None:
    old = tmp_path / "old.weights"  # Darknet < 0.2: images seen is an int32
    old.write_bytes(np.array([0, 1, 0, 77], "<i4").tobytes() + np.ones(3, "<f4").tobytes())
    w = read_weights(old)
    assert w.version == (0, 1, 0) and w.seen == 77 and w.data.size == 3
    assert isinstance(w, Weights) and DARKNET_BN_EPS == 1e-5


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        ("truncate", ".weights ends early"),
        ("extra", "more than the cfg uses: weights for another cfg"),
        ("unknown", "unknown layer [dropout_v2]"),
        ("filters", "mismatched filter count"),
        ("garbage", "not a Darknet .weights file"),
        ("nonumber", "is not a number"),
        ("noweights", "needs its weights: --weights"),
        ("swapped", "give the .cfg first"),
    ],
)
def test_broken_darknet_inputs_are_one_error_line(
    files: tuple[Path, Path], tmp_path: Path, mutate: str, message: str
) -> None:
    cfg, weights = files
    text = CFG
    if mutate == "truncate":
        write_weights(weights, CFG, drop=10)
    elif mutate == "extra":
        write_weights(weights, CFG, extra=5)
    elif mutate == "unknown":
        text = CFG.replace("[maxpool]", "[dropout_v2]")
    elif mutate == "filters":
        text = CFG.replace(f"filters={3 * (5 + NC)}\nactivation=linear", "filters=20\nactivation=linear")
    elif mutate == "garbage":
        weights.write_bytes(b"\xff" * 64)
    elif mutate == "nonumber":
        text = CFG.replace("filters=8\nsize=3", "filters=eight\nsize=3")
    cfg.write_text(text)
    args = ["export", cfg, "-o", tmp_path / "o.onnx"] + (
        [] if mutate == "noweights" else ["--weights", weights]
    )
    if mutate == "swapped":  # the .weights given where the .cfg belongs
        args = ["export", weights, "-o", tmp_path / "o.onnx"]
    r = run_cli(*args)
    assert r.code == 2 and message in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "o.onnx").exists()
