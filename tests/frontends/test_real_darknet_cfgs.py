"""Darknet as its users have it (../shared/models/darknet): the official AlexeyAB cfgs with seeded weights
of the size each implies, and Yolo-Fastest 1.1, a real trained Darknet model, judged by mAP.

The small official cfgs run the whole way here (export → lossless → fuse-nms → convert --to ncnn); the
big ones (yolov3/-spp, yolov4, csp, sam, yolov7: 37-64 M parameters) take minutes each on two cores and
run in `python benchmarks/darknet.py --official`, which prints the op-count table for all 14."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from frontends.darknet import weights_layout
from graphopt.core.model import op_histogram
from tests.helpers import COCO128, DARKNET, need_pnnx, need_shared, run_cli, write_darknet_weights

CFGS = DARKNET / "cfg"
OFFICIAL = [
    "enet-coco.cfg",
    "yolov3-spp.cfg",
    "yolov3-tiny-prn.cfg",
    "yolov3-tiny.cfg",
    "yolov3.cfg",
    "yolov4-csp-s-mish.cfg",
    "yolov4-csp-swish.cfg",
    "yolov4-csp.cfg",
    "yolov4-sam-mish-csp-reorg-bfm.cfg",
    "yolov4-tiny-3l.cfg",
    "yolov4-tiny.cfg",
    "yolov4.cfg",
    "yolov7-tiny.cfg",
    "yolov7.cfg",
]
# Parameters of AlexeyAB's release .weights: (file bytes − 20) / 4 of yolov3.weights (248,007,048 B),
# yolov4.weights (257,717,640 B), yolov4-tiny.weights (24,251,276 B), yolov3-tiny.weights (35,434,956 B).
RELEASE_PARAMS = {
    "yolov3.cfg": 62_001_757,
    "yolov4.cfg": 64_429_405,
    "yolov4-tiny.cfg": 6_062_814,
    "yolov3-tiny.cfg": 8_858_734,
}
FASTEST_CFG = DARKNET / "yolo-fastest-1.1.cfg"
FASTEST_WEIGHTS = DARKNET / "yolo-fastest-1.1.weights"


def test_the_shared_folder_holds_the_14_official_cfgs() -> None:
    assert sorted(p.name for p in need_shared(CFGS).glob("*.cfg")) == OFFICIAL


@pytest.mark.parametrize("cfg", OFFICIAL)
def test_every_official_cfg_builds_and_implies_its_weights(cfg: str) -> None:
    """Every layer of every official cfg is read (the graph is built at the cfg's own size, without
    tensor bytes); where the release .weights size is known, the cfg implies exactly it."""
    text = need_shared(CFGS / cfg).read_text()
    params = sum(block.size for block in weights_layout(text))
    assert params > 0
    if cfg in RELEASE_PARAMS:
        assert params == RELEASE_PARAMS[cfg]


def test_yolo_fastest_implies_its_real_weights_file() -> None:
    size = need_shared(FASTEST_WEIGHTS).stat().st_size
    assert 20 + 4 * sum(block.size for block in weights_layout(FASTEST_CFG.read_text())) == size


@pytest.mark.parametrize(
    ("cfg", "imgsz", "what"),
    [
        ("yolov3-tiny-prn.cfg", 160, "[shortcut] over different channel counts, maxpool stride 1"),
        ("enet-coco.cfg", 160, "[avgpool], [scale_channels], [dropout]"),
        ("yolov7-tiny.cfg", 160, "Darknet's YOLOv7-tiny: new_coords, SPP maxpools"),
    ],
)
def test_small_official_cfgs_export_and_go_all_the_way(
    tmp_path: Path, cfg: str, imgsz: int, what: str
) -> None:
    need_pnnx()
    src = need_shared(CFGS / cfg)
    weights = write_darknet_weights(tmp_path / "seeded.weights", src.read_text())
    exported, lossless = tmp_path / "m.onnx", tmp_path / "m.lossless.onnx"
    r = run_cli("export", src, "--weights", weights, "--imgsz", imgsz, "-o", exported, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["preprocess"] == "resize"  # none of these cfgs sets letter_box=1
    data = need_shared(COCO128 / "split.yaml")
    r = run_cli("optimize", exported, "-o", lossless, "--recipe", "lossless", "--data", data, "--json")
    assert r.code == 0, r.err
    ops = op_histogram(onnx.load(str(lossless)))
    assert "BatchNormalization" not in ops and ops["Conv"] == op_histogram(onnx.load(str(exported)))["Conv"]
    r = run_cli(
        "optimize",
        lossless,
        "-o",
        tmp_path / "nms.onnx",
        "--passes",
        "fuse-nms",
        "--set",
        "fuse-nms.conf=0.00005",
        "--data",
        data,
    )
    assert r.code == 0, r.err  # checked against the runtime's own decode + NMS on the same images
    r = run_cli("convert", lossless, "--to", "ncnn", "--fp32", "-o", tmp_path / "ncnn")
    assert r.code == 0, r.err  # NCNN checked against onnxruntime by convert itself


@pytest.fixture(scope="module")
def fastest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Yolo-Fastest 1.1 exported unmodified, with the cfg's preprocessing and with --letterbox."""
    folder = tmp_path_factory.mktemp("fastest")
    out = {}
    for mode, flags in (("resize", []), ("letterbox", ["--letterbox"])):
        path = folder / f"fastest-{mode}.onnx"
        r = run_cli("export", need_shared(FASTEST_CFG), "--weights", FASTEST_WEIGHTS, "-o", path, *flags)
        assert r.code == 0, r.err
        out[mode] = path
    return out


def test_yolo_fastest_exports_unmodified(fastest: dict[str, Path]) -> None:
    model = onnx.load(str(fastest["resize"]))
    ops = op_histogram(model)
    assert ops["Conv"] == 84 and ops["BatchNormalization"] == 82 and "Dropout" not in ops
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 1500, 85]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["graphopt.preprocess"])["mode"] == "resize"
    assert json.loads(meta["graphopt.source"])["images_seen"] == 14_231_680


def test_yolo_fastest_is_scored_with_the_preprocessing_it_was_trained_with(fastest: dict[str, Path]) -> None:
    """Darknet trained and published it resizing (no letter_box): graphopt eval does so from the metadata,
    and that scores better than letterboxing the same weights (measured: mAP50 32.9 vs 28.2 on these 64
    images; 24.4 % published on COCO val2017, a harder set)."""
    data = need_shared(COCO128 / "split.yaml")
    scores = {}
    for mode, path in fastest.items():
        r = run_cli("eval", path, "--data", data, "--json")
        assert r.code == 0, r.err
        result = json.loads(r.out)
        assert result["preprocess"] == mode and result["images"] == 64
        scores[mode] = result
    assert scores["resize"]["map50"] > 0.244  # direction: our 64 images are easier than COCO val
    assert scores["resize"]["map50"] > scores["letterbox"]["map50"] + 0.02
    assert scores["resize"]["map50_95"] > scores["letterbox"]["map50_95"]
