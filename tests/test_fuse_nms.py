"""fuse-nms: end-to-end outputs equal the runtime's host NMS; layouts, errors, NCNN refusal, after quantize."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from graphopt.core.errors import GraphoptError
from graphopt.core.model import io_signature, load_model, read_metadata, save_model
from graphopt.data.feeds import FeedSource
from graphopt.passes.pipeline import Pipeline
from runtime.detector import Detector
from tests.helpers import run_cli, write_images


def _fused(path: Path, out: Path, data: Path | None = None, **options: object) -> Path:
    feeds = FeedSource(data, samples=3) if data else None
    result = Pipeline.from_passes(
        ["simplify", "fuse-nms"], {"fuse-nms": options} if options else None, feeds=feeds
    ).run(load_model(path))
    save_model(result.model, out)
    return out


@pytest.mark.parametrize("fixture", ["yolov5", "yolov8", "yolov9-dual"])
def test_end2end_outputs(zoo_onnx, tmp_path: Path, fixture: str) -> None:  # noqa: ANN001
    out = _fused(zoo_onnx(fixture), tmp_path / "e2e.onnx", conf=0.05, max_det=20)
    sig = io_signature(load_model(out))
    assert [(o["name"], o["shape"]) for o in sig["outputs"]] == [
        ("num_dets", [1, 1]),
        ("det_boxes", [1, 20, 4]),
        ("det_scores", [1, 20]),
        ("det_classes", [1, 20]),
    ]
    meta = read_metadata(load_model(out))
    assert meta["graphopt.head"] == "end2end"
    assert json.loads(meta["graphopt.nms"]) == {
        "max_det": 20,
        "iou": 0.45,
        "conf": 0.05,
        "multi_label": False,
    }
    onnx.checker.check_model(load_model(out))


@pytest.mark.parametrize("fixture", ["yolov5", "yolov8"])
def test_detections_equal_host_nms(zoo_onnx, tmp_path: Path, fixture: str) -> None:  # noqa: ANN001
    images = write_images(tmp_path / "imgs", 5)
    conf = 1e-4  # random weights with YOLO bias priors: scores are tiny
    out = _fused(zoo_onnx(fixture), tmp_path / "e2e.onnx", data=images, conf=conf, iou=0.5, max_det=50)
    host = Detector(zoo_onnx(fixture), conf=conf, iou=0.5, max_det=50)
    fused = Detector(out, conf=conf)
    assert fused.head == "end2end"
    total = 0
    for path in sorted(images.glob("*.jpg")):
        import cv2

        frame = cv2.imread(str(path))
        a, b = host(frame), fused(frame)
        oa, ob = np.lexsort((a.class_ids, -a.scores)), np.lexsort((b.class_ids, -b.scores))
        assert a.class_ids[oa].tolist() == b.class_ids[ob].tolist()
        np.testing.assert_allclose(b.boxes[ob], a.boxes[oa], atol=1e-3)
        np.testing.assert_allclose(b.scores[ob], a.scores[oa], atol=1e-5)
        total += len(a)
    assert total > 0


def test_max_det_caps_and_pads(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    out = _fused(zoo_onnx("yolov8"), tmp_path / "e2e.onnx", conf=0.0, max_det=3)
    from graphopt.core.ort_session import run

    model = load_model(out)
    res = run(model, FeedSource(samples=1).feeds_for(model))[0]
    assert int(res["num_dets"][0, 0]) == 3 and res["det_boxes"].shape == (1, 3, 4)
    out2 = _fused(zoo_onnx("yolov8"), tmp_path / "e2e2.onnx", conf=0.999, max_det=5)
    res2 = run(load_model(out2), FeedSource(samples=1).feeds_for(load_model(out2)))[0]
    assert int(res2["num_dets"][0, 0]) == 0 and not res2["det_boxes"].any()


def test_after_quantize(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    images = write_images(tmp_path / "imgs", 10)
    result = Pipeline.from_passes(
        ["quantize", "fuse-nms"],
        {"quantize": {"calibration": "minmax", "samples": 8}, "fuse-nms": {"conf": 0.05}},
        feeds=FeedSource(images, samples=2),
    ).run(load_model(zoo_onnx("yolov5")))
    assert result.reports[1].verification["ok"]
    ops = {n.op_type for n in result.model.graph.node}
    assert "NonMaxSuppression" in ops and "QuantizeLinear" in ops


def test_errors_and_ncnn_refusal(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    out = _fused(zoo_onnx("yolov5"), tmp_path / "e2e.onnx")
    with pytest.raises(GraphoptError, match="already has end-to-end NMS"):
        Pipeline.from_passes(["fuse-nms"]).run(load_model(out))
    r = run_cli("convert", out, "--to", "ncnn", "-o", tmp_path / "ncnn")
    assert r.code == 2 and "NMS inside the graph" in r.err and "fuse-nms" in r.err
    from tools.make_demo_model import GraphBuilder

    b = GraphBuilder(0)
    y = b.conv("x", 3, 4, 3)
    odd = tmp_path / "odd.onnx"
    onnx.save(b.model([("x", [1, 3, 8, 8])], [y]), str(odd))
    with pytest.raises(GraphoptError, match="expected a static decoded YOLO head"):
        Pipeline.from_passes(["fuse-nms"]).run(load_model(odd))
