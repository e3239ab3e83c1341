"""Darknet export against WongKinYiu's PyTorch_YOLOv4 (../shared/repos): the repo builds Darknet(cfg)
for yolov4-tiny, yolov4 and yolov4-csp-mish (random weights, randomized BN statistics) and writes real
`.weights` with its own save_weights; graphopt's export of cfg + weights equals the repo's eval-mode
output on real COCO128 images. Then the result goes through lossless, fuse-nms, quantize and
convert --to ncnn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from frontends.darknet import export_darknet
from graphopt.core.model import load_model, op_histogram
from graphopt.core.ort_session import run
from graphopt.data.feeds import FeedSource
from graphopt.passes.pipeline import Pipeline
from runtime.preprocess import Preprocess
from runtime.sources import read_image
from tests.helpers import COCO128, need_pnnx, need_shared, run_cli, run_cli_child

pytest.importorskip("torch", reason="the reference is the repo's torch model")

HOLDOUT = COCO128 / "holdout.txt"
CFGS = [("yolov4-tiny.cfg", 416, 99), ("yolov4.cfg", 320, 544), ("yolov4-csp-mish.cfg", 320, 643)]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("darknet")


def _images(size: int, count: int = 2) -> np.ndarray:
    paths = FeedSource(need_shared(HOLDOUT)).images[:count]
    pre = Preprocess.from_meta(None)
    return np.concatenate([pre(read_image(p), (size, size))[0] for p in paths])


@pytest.fixture(scope="module")
def exported(work: Path) -> dict[str, tuple[Path, np.ndarray, np.ndarray]]:
    from tests import upstream

    repo = upstream.repo_copy("PyTorch_YOLOv4", work)
    out = {}
    for cfg, size, _ in CFGS:
        weights = work / f"{cfg}.weights"
        x = _images(size)
        pt = work / f"{cfg}.pt"  # the same model pickled (Mish as mish_cuda.MishCuda in the csp-mish one)
        reference = upstream.darknet_reference(
            repo, f"cfg/{cfg}", weights, x, work, pt=pt, mish_cuda="mish" in cfg
        )
        onnx_path = work / f"{cfg}.onnx"
        # The repo's YOLOLayer decodes every cfg the scaled way, and builds BatchNorm2d with eps 1e-4.
        export_darknet(repo / "cfg" / cfg, weights, onnx_path, imgsz=size, decode="scaled", bn_eps=1e-4)
        out[cfg] = (onnx_path, x, reference)
    out["repo"] = repo  # type: ignore[assignment]
    return out


@pytest.mark.parametrize(("cfg", "size", "nodes"), CFGS)
def test_darknet_export_equals_pytorch_yolov4(exported: dict, cfg: str, size: int, nodes: int) -> None:
    path, x, reference = exported[cfg]
    model = load_model(path)
    assert len(model.graph.node) == nodes  # measured: tiny 99, yolov4 544, csp-mish 643
    got = np.concatenate([run(model, [{"images": x[i : i + 1]}])[0]["output0"] for i in range(len(x))])
    assert got.shape == reference.shape
    diff = np.abs(got - reference)
    assert np.all(diff <= 1e-3 + 1e-5 * np.abs(reference))  # the export tolerance; measured ≤ 1.8e-4 px
    assert diff[..., 4:].max() < 1e-5


@pytest.mark.parametrize(("cfg", "size", "nodes"), CFGS)
def test_darknet_models_through_lossless_and_fuse_nms(
    exported: dict, cfg: str, size: int, nodes: int
) -> None:
    path = exported[cfg][0]
    feeds = FeedSource(need_shared(HOLDOUT), samples=2)
    result = Pipeline.from_recipe("lossless", feeds=feeds).run(load_model(path))
    ops = op_histogram(result.model)
    assert "BatchNormalization" not in ops and ops["Conv"] == op_histogram(load_model(path))["Conv"]
    # NMS in the graph against the runtime's host NMS at a threshold where every scale has candidates
    nms = Pipeline.from_passes(["fuse-nms"], {"fuse-nms": {"conf": 0.00005}}, feeds=feeds).run(result.model)
    assert nms.reports[0].verification["ok"]


def test_darknet_tiny_quantizes(exported: dict, work: Path) -> None:
    path = exported["yolov4-tiny.cfg"][0]
    out = work / "tiny.int8.onnx"
    r = run_cli(
        "optimize", path, "-o", out, "--recipe", "int8-x86", "--data", need_shared(COCO128 / "split.yaml")
    )
    assert r.code == 0, r.err
    assert "QuantizeLinear" in op_histogram(onnx.load(str(out)))


@pytest.mark.parametrize(("cfg", "size", "nodes"), CFGS)
def test_darknet_models_convert_to_ncnn(exported: dict, work: Path, cfg: str, size: int, nodes: int) -> None:
    need_pnnx()
    lossless = work / f"{cfg}.lossless.onnx"
    # each command in its own interpreter, as a user runs them: yolov4's 245 MB of weights leave with it
    r = run_cli_child("optimize", exported[cfg][0], "-o", lossless, "--recipe", "lossless", tmp=work)
    assert r.code == 0, r.err
    r = run_cli_child("convert", lossless, "--to", "ncnn", "-o", work / f"ncnn-{cfg}", "--json", tmp=work)
    assert r.code == 0, r.err  # convert checks NCNN against onnxruntime on the same input itself


@pytest.mark.parametrize("cfg", ["yolov4-tiny.cfg", "yolov4-csp-mish.cfg"])
def test_pytorch_yolov4_checkpoint_loads_with_repo_and_without_mish_cuda(
    exported: dict, work: Path, cfg: str
) -> None:
    """Its pickled Darknet model exports with --repo --trust; a model pickled with mish_cuda.MishCuda
    loads without the extension (plain Mish), and equals the Darknet .cfg + .weights export."""
    import importlib.util

    from frontends import export

    assert importlib.util.find_spec("mish_cuda") is None
    path, x, reference = exported[cfg]
    out = work / f"{cfg}.from-pt.onnx"
    size = x.shape[-1]
    report = export(work / f"{cfg}.pt", out, imgsz=size, repo=exported["repo"], trust=True).as_dict()
    assert report["family"] == "pytorch-yolov4" and report["batchnorm"] > 0
    import sys

    assert "models" not in sys.modules  # its namespace package must not shadow the next repo's models/
    model = load_model(out)
    got = np.concatenate([run(model, [{"images": x[i : i + 1]}])[0]["output0"] for i in range(len(x))])
    assert np.all(np.abs(got - reference) <= 1e-3 + 1e-5 * np.abs(reference))
