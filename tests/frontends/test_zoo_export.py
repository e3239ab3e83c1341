"""Frontends on the reference zoo: exports as trained (BN and Rep branches kept), verified, with metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("torch", reason="needs PyTorch (the exporter)")

import torch  # noqa: E402

from frontends import export  # noqa: E402
from frontends.zoo import BUILDERS, single_branch_from_dual, yolov9_dual_tiny  # noqa: E402
from frontends.zoo.blocks import RepConvN  # noqa: E402
from graphopt.core.errors import VerificationError  # noqa: E402
from graphopt.core.model import op_histogram, read_metadata  # noqa: E402
from graphopt.core.ort_session import session  # noqa: E402

IMGSZ = 128


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_zoo_model_exports_as_trained(name: str, tmp_path: Path) -> None:
    module = BUILDERS[name]()
    report = export(module, tmp_path / f"{name}.onnx", imgsz=IMGSZ)
    model = onnx.load(str(tmp_path / f"{name}.onnx"))
    onnx.checker.check_model(model, full_check=True)
    ops = op_histogram(model)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in module.modules())
    assert ops["BatchNormalization"] == n_bn  # not folded by the exporter
    assert ops["Conv"] == n_conv  # RepConvN 1x1 branches kept
    assert report.max_abs_diff < 1e-3
    assert [i.name for i in model.graph.input] == ["images"]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, IMGSZ, IMGSZ]
    meta = read_metadata(model)
    assert json.loads(meta["graphopt.imgsz"]) == [IMGSZ, IMGSZ]
    assert json.loads(meta["graphopt.strides"]) == [8, 16, 32]
    assert meta["graphopt.head"] == ("yolov5" if name == "yolov5" else "anchor-free")
    assert json.loads(meta["graphopt.names"])["0"] == "class0"
    assert not list(tmp_path.glob("*.data"))  # single file


def test_export_matches_torch_on_independent_run(tmp_path: Path) -> None:
    module = BUILDERS["gelan"]()
    export(module, tmp_path / "g.onnx", imgsz=IMGSZ)
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = module(x).numpy()
    got = session(onnx.load(str(tmp_path / "g.onnx"))).run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=1e-4)


def test_rep_branches_present_in_gelan() -> None:
    module = BUILDERS["gelan"]()
    assert sum(isinstance(m, RepConvN) for m in module.modules()) > 0


def test_dual_branch_exports_two_outputs_with_main_recorded(tmp_path: Path) -> None:
    dual = yolov9_dual_tiny()
    report = export(dual, tmp_path / "dual.onnx", imgsz=IMGSZ)
    model = onnx.load(str(tmp_path / "dual.onnx"))
    assert [o.name for o in model.graph.output] == ["output0", "output1"]
    assert read_metadata(model)["graphopt.main_output"] == "output1"
    assert report.main_output == "output1"
    ops = op_histogram(model)
    assert ops["BatchNormalization"] > 0
    # the main output is what the single-branch model (same weights) computes
    single = single_branch_from_dual(dual)
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = single(x).numpy()
    main = session(model).run(["output1"], {"images": x.numpy()})[0]
    np.testing.assert_allclose(main, expected, atol=1e-3, rtol=1e-4)


def test_real_image_verification(tmp_path: Path, coco128: Path) -> None:
    image = next((coco128 / "images" / "train2017").glob("*.jpg"))
    report = export(BUILDERS["yolov5"](), tmp_path / "m.onnx", imgsz=IMGSZ, image=image)
    assert report.inputs == f"image {image.name}"


def test_verification_failure_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="nothing was written"):
        export(BUILDERS["yolov8"](), tmp_path / "m.onnx", imgsz=IMGSZ, atol=0.0, rtol=0.0)
    assert not (tmp_path / "m.onnx").exists()


def test_imgsz_must_be_a_stride_multiple(tmp_path: Path) -> None:
    from graphopt.core.errors import GraphoptError

    with pytest.raises(GraphoptError, match="multiple of the model's largest stride"):
        export(BUILDERS["yolov8"](), tmp_path / "m.onnx", imgsz=100)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_checked_in_fixtures_match_a_fresh_export(name: str, tmp_path: Path) -> None:
    """tests/fixtures/*.onnx (what the torch-free tests use) are the zoo's export today; rewrite them with
    tools/make_test_fixtures.py after a zoo change."""
    from graphopt.core.model import load_model, op_histogram
    from tests.helpers import FIXTURES
    from tools.make_test_fixtures import IMGSZ, fixture_name

    fresh = tmp_path / "fresh.onnx"
    export(BUILDERS[name](), fresh, imgsz=IMGSZ)
    committed = load_model(FIXTURES / fixture_name(name))
    assert op_histogram(committed) == op_histogram(load_model(fresh))
    x = {"images": np.random.default_rng(4).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)}
    for a, b in zip(session(committed).run(None, x), session(load_model(fresh)).run(None, x), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
