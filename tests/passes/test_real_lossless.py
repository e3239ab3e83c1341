"""The lossless recipe on real exports (../shared) and on the zoo's dual-branch fixture."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("torch", reason="needs PyTorch (the exporter)")

import torch  # noqa: E402

from graphopt.core.model import load_model, op_histogram  # noqa: E402
from graphopt.core.ort_session import run  # noqa: E402
from graphopt.data.feeds import FeedSource  # noqa: E402
from graphopt.passes.pipeline import Pipeline  # noqa: E402
from tests.helpers import COCO128, YOLOV9T, ZOO_IMGSZ, need_shared  # noqa: E402


def _lossless(path: Path, data: Path | None = None) -> onnx.ModelProto:
    feeds = FeedSource(data, samples=2) if data else None
    return Pipeline.from_recipe("lossless", feeds=feeds).run(load_model(path)).model


def _real_feeds(model: onnx.ModelProto, count: int) -> list[dict[str, np.ndarray]]:
    return FeedSource(need_shared(COCO128) / "data.yaml", samples=count).feeds_for(model)


def _ultralytics_fused_conv_count(tmp_path: Path) -> int:
    """Conv count of the same checkpoint fused by Ultralytics (model.fuse()) and then exported."""
    from frontends.exporter import export_loaded
    from frontends.families import load_checkpoint
    from frontends.families.common import InferenceOutputs

    loaded = load_checkpoint(YOLOV9T)
    fused = copy.deepcopy(loaded.module.model).fuse()
    loaded.module = InferenceOutputs(fused).eval()
    export_loaded(loaded, tmp_path / "fused.onnx")
    return op_histogram(onnx.load(str(tmp_path / "fused.onnx")))["Conv"]


def test_yolov9t_lossless_matches_ultralytics_fuse(yolov9t_onnx: Path, tmp_path: Path) -> None:
    source = load_model(yolov9t_onnx)
    optimized = _lossless(yolov9t_onnx, COCO128 / "data.yaml")
    ops = op_histogram(optimized)
    assert "BatchNormalization" not in ops
    assert ops["Conv"] == _ultralytics_fused_conv_count(tmp_path) == 192
    feeds = _real_feeds(source, 8)
    for want, got in zip(run(source, feeds), run(optimized, feeds), strict=True):
        a, b = got["output0"].astype(np.float64), want["output0"].astype(np.float64)
        # boxes are pixels up to 640 (fp32 noise grows with them), class scores are in [0, 1]
        assert np.all(np.abs(a - b) <= 1e-3 + 1e-5 * np.abs(b))
        assert np.abs(a[:, 4:] - b[:, 4:]).max() < 1e-5


def test_yolov5n_lossless_beats_onnxsim_alone(yolov5n_onnx: Path) -> None:
    import onnxsim

    source = load_model(yolov5n_onnx)
    optimized = _lossless(yolov5n_onnx, COCO128 / "data.yaml")
    ops = op_histogram(optimized)
    assert "BatchNormalization" not in ops and ops["Conv"] == 60
    onnxsim_only, ok = onnxsim.simplify(onnx.load(str(yolov5n_onnx)))  # onnxsim defaults (fuses BN too)
    assert ok
    assert sum(ops.values()) <= len(onnxsim_only.graph.node)
    feeds = _real_feeds(source, 8)
    for want, got in zip(run(source, feeds), run(optimized, feeds), strict=True):
        a, b = got["output0"].astype(np.float64), want["output0"].astype(np.float64)
        assert np.all(np.abs(a - b) <= 1e-3 + 1e-5 * np.abs(b))
        assert np.abs(a[..., 4:] - b[..., 4:]).max() < 1e-5


def test_dual_branch_fixture_becomes_the_single_branch_model(tmp_path: Path) -> None:
    from frontends import export
    from frontends.zoo import single_branch_from_dual, yolov9_dual_tiny

    dual = yolov9_dual_tiny()
    export(dual, tmp_path / "dual.onnx", imgsz=ZOO_IMGSZ)
    export(single_branch_from_dual(dual), tmp_path / "single.onnx", imgsz=ZOO_IMGSZ)
    result = Pipeline.from_recipe("lossless").run(load_model(tmp_path / "dual.onnx"))
    drop = next(r for r in result.reports if r.name == "drop-aux")
    assert drop.details["kept"] == ["output1"] and drop.details["dropped"] == ["output0"]
    single = _lossless(tmp_path / "single.onnx")
    assert [o.name for o in result.model.graph.output] == ["output1"]
    assert op_histogram(result.model)["Conv"] == op_histogram(single)["Conv"]
    assert op_histogram(result.model) == op_histogram(single)
    x = torch.rand(1, 3, ZOO_IMGSZ, ZOO_IMGSZ, generator=torch.Generator().manual_seed(11)).numpy()
    a = run(result.model, [{"images": x}])[0]["output1"]
    b = run(single, [{"images": x}])[0]["output0"]
    np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4)


def test_drop_aux_without_metadata(tmp_path: Path) -> None:
    """The main output is found from the graph alone (a peer's export carries no graphopt metadata)."""
    from frontends import export
    from frontends.zoo import yolov9_dual_tiny
    from graphopt.core.model import save_model

    export(yolov9_dual_tiny(), tmp_path / "dual.onnx", imgsz=ZOO_IMGSZ)
    model = load_model(tmp_path / "dual.onnx")
    del model.metadata_props[:]
    save_model(model, tmp_path / "bare.onnx")
    result = Pipeline.from_passes(["drop-aux"]).run(load_model(tmp_path / "bare.onnx"))
    assert [o.name for o in result.model.graph.output] == ["output1"]


@pytest.mark.parametrize("name", ["yolov5", "yolov8", "gelan"])
def test_zoo_lossless_removes_all_bn(zoo_onnx, name: str) -> None:  # noqa: ANN001
    ops = op_histogram(_lossless(zoo_onnx(name)))
    assert "BatchNormalization" not in ops
