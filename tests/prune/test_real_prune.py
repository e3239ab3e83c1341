"""`prune` on real models (../shared): yolov5n-coco's accuracy after pruning with recovery, and the
YOLOv9 RepNCSPELAN4 Split/Concat structure of three YOLOv9 ONNX models — ours, WongKinYiu's dual-head
training output, and Ultralytics' own export (an ONNX graphopt did not make).

Calibration and recovery use COCO128's first half (split.yaml `train`), accuracy the other half."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from graphopt.core.model import load_model, op_histogram
from graphopt.data.feeds import FeedSource
from graphopt.passes.pipeline import Pipeline
from tests.helpers import COCO128, YOLOV9T, need_shared

SPLIT = COCO128 / "split.yaml"
FAST = {"samples": 8, "sensitivity_samples": 2}  # bounded CI time; the benchmark uses the defaults
# the YOLOv9 tests check structure (channel splits, MACs, shapes), which the input size does not change;
# recovery's fits scale with the pixels (yolov9t at 0.7 MACs: 5x less time at 320 than at 640)
STRUCTURE_IMGSZ = 320


def _lossless(model: onnx.ModelProto) -> onnx.ModelProto:
    return Pipeline.from_recipe("lossless", feeds=FeedSource(need_shared(SPLIT), samples=2)).run(model).model


def _prune(model: onnx.ModelProto, **options: object) -> tuple[onnx.ModelProto, dict]:
    feeds = FeedSource(need_shared(SPLIT), samples=2)
    result = Pipeline.from_passes(["prune"], {"prune": FAST | options}, feeds=feeds).run(model)
    return result.model, result.reports[0].as_dict()


def _shapes(model: onnx.ModelProto) -> list[tuple[str, list[int]]]:
    return [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in model.graph.output]


def _check_pruned(before: onnx.ModelProto, after: onnx.ModelProto, report: dict, macs: float) -> None:
    onnx.checker.check_model(after, full_check=True)
    assert _shapes(after) == _shapes(before)
    details = report["details"]
    assert details["macs_after"] <= details["macs_target"] == int(macs * details["macs_before"])
    assert op_histogram(after)["Conv"] == op_histogram(before)["Conv"]  # channels go, layers stay
    assert all(g["kept"] % 16 == 0 or g["kept"] == g["channels"] for g in details["groups"])
    assert report["verification"]["cosine"] > 0.9


@pytest.mark.slow
def test_yolov5n_pruned_to_85_percent_keeps_detecting(yolov5n_lossless: Path, tmp_path: Path) -> None:
    from graphopt.eval.evaluate import evaluate

    before = load_model(yolov5n_lossless)
    after, report = _prune(before, macs=0.85)
    _check_pruned(before, after, report, 0.85)
    assert report["details"]["recover"] == "lstsq" and report["details"]["recovered_layers"] > 0
    # lstsq must recover a real part of what pruning cost (the pruned, unrecovered error is the baseline)
    assert report["details"]["error_after_recovery"] < 0.7 * report["details"]["error_before_recovery"]
    path = tmp_path / "pruned85.onnx"
    onnx.save_model(after, str(path))
    result = evaluate(path, SPLIT, progress=False)  # the holdout half
    assert result.images == 64 and result.map50_95 > 0.08  # measured 0.17 (unpruned 0.38)


@pytest.mark.slow
def test_yolov9t_ball_prunes_through_repncspelan4(yolov9t_onnx_320: Path) -> None:
    before = _lossless(load_model(yolov9t_onnx_320))
    before_ranges = _channel_ranges(before)
    assert before_ranges  # RepNCSPELAN4's channel split (Split or Slice on axis 1) is in the graph
    after, report = _prune(before, macs=0.7)
    _check_pruned(before, after, report, 0.7)
    after_ranges = _channel_ranges(after)
    assert any(
        after_ranges[k] != v for k, v in before_ranges.items()
    )  # the split points followed the pruning


def _channel_ranges(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Per Split its sizes, per Slice its starts/ends: the constants that say where channels divide."""
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    ranges = {}
    for n in model.graph.node:
        if n.op_type in ("Split", "Slice") and all(i in consts for i in n.input[1:3]):
            ranges[n.name] = [int(v) for i in n.input[1:3] for v in np.ravel(consts[i])]
    return ranges


def test_ultralytics_own_export_prunes(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    from benchmarks.prune_yolov9 import ultralytics_export

    theirs = ultralytics_export(need_shared(YOLOV9T), tmp_path, imgsz=STRUCTURE_IMGSZ)
    before = _lossless(load_model(theirs))
    after, report = _prune(before, macs=0.85)
    _check_pruned(before, after, report, 0.85)


def test_wongkinyiu_yolov9_t_prunes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from frontends import export
    from tests import upstream

    ckpt = need_shared(COCO128.parents[1] / "models" / "yolov9-t-coco128-1ep.pt")
    repo = upstream.repo_copy("yolov9", tmp_path)
    out = tmp_path / "v9t.onnx"
    export(ckpt, out, repo=repo, trust=True, imgsz=STRUCTURE_IMGSZ)
    before = _lossless(load_model(out))
    assert [o.name for o in before.graph.output] == ["output1"]  # the auxiliary branch is gone
    after, report = _prune(before, macs=0.85)
    _check_pruned(before, after, report, 0.85)
