"""fuse-nms on the real models over COCO128: same detections as host NMS, same mAP."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from graphopt.core.model import load_model, save_model
from graphopt.data.feeds import FeedSource
from graphopt.eval.evaluate import EVAL_CONF, EVAL_IOU, EVAL_MAX_DET, evaluate
from graphopt.passes.pipeline import Pipeline
from runtime.detector import Detector
from tests.helpers import COCO128, need_shared


def _fuse(src: Path, out: Path, **options: object) -> Path:
    data = need_shared(COCO128) / "data.yaml"
    result = Pipeline.from_passes(["fuse-nms"], {"fuse-nms": options}, feeds=FeedSource(data, samples=4)).run(
        load_model(src)
    )
    assert result.reports[0].verification["ok"]
    save_model(result.model, out)
    return out


@pytest.mark.parametrize("which", ["yolov5n", "yolov9t"])
def test_fused_equals_host_nms(
    which: str, yolov5n_lossless: Path, yolov9t_onnx: Path, tmp_path: Path
) -> None:
    src = yolov5n_lossless if which == "yolov5n" else yolov9t_onnx
    conf, iou, max_det = (0.25, 0.45, 100) if which == "yolov5n" else (0.05, 0.45, 100)
    fused = Detector(_fuse(src, tmp_path / "e2e.onnx", conf=conf, iou=iou, max_det=max_det), conf=conf)
    host = Detector(src, conf=conf, iou=iou, max_det=max_det)
    images = sorted((need_shared(COCO128) / "images" / "train2017").glob("*.jpg"))[:32]
    total = 0
    for path in images:
        frame = cv2.imread(str(path))
        a, b = host(frame), fused(frame)
        assert len(a) == len(b), path.name
        oa, ob = np.lexsort((a.class_ids, -a.scores)), np.lexsort((b.class_ids, -b.scores))
        assert a.class_ids[oa].tolist() == b.class_ids[ob].tolist(), path.name
        np.testing.assert_allclose(b.boxes[ob], a.boxes[oa], atol=1e-3)  # original-image pixels
        np.testing.assert_allclose(b.scores[ob], a.scores[oa], atol=1e-5)
        total += len(a)
    assert total > 10


def test_fused_map_equals_unfused(yolov5n_lossless: Path, yolov5n_lossless_map: float, tmp_path: Path) -> None:
    data = need_shared(COCO128) / "data.yaml"
    fused = _fuse(
        yolov5n_lossless,
        tmp_path / "e2e.onnx",
        conf=EVAL_CONF,
        iou=EVAL_IOU,
        max_det=EVAL_MAX_DET,
        multi_label=True,
    )
    a = yolov5n_lossless_map
    b = evaluate(fused, data, progress=False).map50_95
    assert abs(a - b) <= 0.001, (a, b)  # acceptance: within 0.1 point


def test_yolov7_tiny_one_epoch_fuses_modulo_score_ties(tmp_path: Path) -> None:
    """Issue 24: the 1-epoch yolov7-tiny's scores lie within ~2e-6 of each other, so which of two
    equal-scored boxes NMS keeps (and which make the top-100 cut) is arbitrary in both implementations;
    the issue's command must verify the fused NMS and exit 0."""
    import json

    pytest.importorskip("torch")
    from tests import upstream
    from tests.helpers import SHARED, run_cli

    ckpt = need_shared(SHARED / "models" / "yolov7-tiny-coco128-1ep.pt")
    need_shared(upstream.REPOS)
    repo = upstream.repo_copy("yolov7", tmp_path)
    exported = tmp_path / "yolov7-tiny.onnx"
    r = run_cli("export", ckpt, "--repo", repo, "--trust", "-o", exported)
    assert r.code == 0, r.err
    report = tmp_path / "report.json"
    r = run_cli(
        "optimize", exported, "-o", tmp_path / "y7.nms.onnx", "--passes", "simplify,fuse-nms",
        "--set", "fuse-nms.conf=0.00005", "--set", "fuse-nms.iou=0.65", "--set", "fuse-nms.max_det=100",
        "--report", report,
    )  # fmt: skip
    assert r.code == 0, r.err
    check = json.loads(report.read_text())["passes"][1]["verification"]
    assert check["ok"] and check["reason"].startswith("equal to host NMS"), check
