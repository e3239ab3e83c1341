"""The runtime on the real YOLOv5n export over COCO128: mAP, and NCNN agreeing with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from graphopt.eval.evaluate import evaluate
from runtime.detector import Detector
from tests.helpers import COCO128, need_pnnx, need_shared


@pytest.fixture(scope="module")
def yolov5n_ncnn(yolov5n_lossless: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_pnnx()
    from graphopt.compile.ncnn import convert_to_ncnn

    out = tmp_path_factory.mktemp("v5ncnn")
    convert_to_ncnn(yolov5n_lossless, out, fp16=False)
    return out


# yolov5 7.0.14's own val.py on this ONNX export over COCO128 (batch 1, 640, conf 0.001, IoU 0.6):
#   val.py --weights yolov5n-coco.onnx --data coco128.yaml --imgsz 640 --device cpu
#   all 128 929 P 0.568 R 0.535 mAP50 0.552 mAP50-95 0.356
# An external reference measured once (offline val.py needs hub/font stubs), not something we compute.
YOLOV5_VAL_MAP50_95 = 0.356
YOLOV5_VAL_MAP50 = 0.552


def test_yolov5n_map_matches_yolov5_val(yolov5n_onnx: Path, yolov5n_lossless_map: float) -> None:
    data = need_shared(COCO128) / "data.yaml"
    result = evaluate(yolov5n_onnx, data, progress=False)
    assert result.images == 128 and result.instances == 929
    assert abs(result.map50_95 - YOLOV5_VAL_MAP50_95) <= 0.005  # acceptance: within 0.5 point
    assert abs(result.map50 - YOLOV5_VAL_MAP50) <= 0.01
    assert yolov5n_lossless_map == pytest.approx(result.map50_95, abs=1e-3)  # the lossless recipe's


def test_ncnn_detections_equal_ort(yolov5n_lossless: Path, yolov5n_ncnn: Path) -> None:
    images = sorted((need_shared(COCO128) / "images" / "train2017").glob("*.jpg"))[:24]
    ort_det, ncnn_det = Detector(yolov5n_lossless), Detector(yolov5n_ncnn, backend="ncnn")
    assert ncnn_det.head == "yolov5" and ncnn_det.names[0] == "person"
    total = 0
    for path in images:
        frame = cv2.imread(str(path))
        a, b = ort_det(frame), ncnn_det(frame)
        assert b.class_ids.tolist() == a.class_ids.tolist(), path.name
        np.testing.assert_allclose(b.boxes, a.boxes, atol=0.1)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-3)
        total += len(a)
    assert total > 50


def test_ncnn_map_equals_ort(yolov5n_lossless_map: float, yolov5n_ncnn: Path) -> None:
    data = need_shared(COCO128) / "data.yaml"
    ort_map = yolov5n_lossless_map
    ncnn_map = evaluate(yolov5n_ncnn, data, progress=False).map50_95
    assert ncnn_map == pytest.approx(ort_map, abs=1e-3)
