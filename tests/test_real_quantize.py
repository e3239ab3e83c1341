"""int8 on the real models (../shared): accuracy kept on COCO128, no collapse on YOLOv9t."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphopt.evaluate import evaluate
from graphopt.model import load_model, save_model
from graphopt.pipeline import Pipeline
from graphopt.verify import FeedSource, run
from runtime.decode import head_arrays
from tests.conftest import COCO128, need_shared


def _int8(src: Path, out: Path, target: str) -> Path:
    data = need_shared(COCO128) / "data.yaml"
    result = Pipeline.from_passes(
        ["quantize"], {"quantize": {"target": target}}, feeds=FeedSource(data, samples=2)
    ).run(load_model(src))
    save_model(result.model, out)
    return out


def test_yolov5n_int8_keeps_map(yolov5n_lossless: Path, tmp_path: Path) -> None:
    data = need_shared(COCO128) / "data.yaml"
    fp32 = evaluate(yolov5n_lossless, data, progress=False).map50_95
    int8 = evaluate(_int8(yolov5n_lossless, tmp_path / "int8.onnx", "arm"), data, progress=False).map50_95
    assert fp32 - int8 <= 0.010, (fp32, int8)  # acceptance: within 1.0 mAP50-95 point


def test_yolov9t_int8_does_not_collapse(yolov9t_onnx: Path, tmp_path: Path) -> None:
    fp32 = tmp_path / "fp32.onnx"
    save_model(Pipeline.from_recipe("lossless").run(load_model(yolov9t_onnx)).model, fp32)
    int8 = _int8(fp32, tmp_path / "int8.onnx", "arm")
    feeds = FeedSource(need_shared(COCO128) / "data.yaml", samples=8).feeds_for(load_model(fp32))
    a, b = run(load_model(fp32), feeds), run(load_model(int8), feeds)
    sa = np.concatenate([head_arrays(x["output0"], "anchor-free")[1].ravel() for x in a])
    sb = np.concatenate([head_arrays(x["output0"], "anchor-free")[1].ravel() for x in b])
    live = (sa > 0.01) | (sb > 0.01)
    assert live.sum() > 100
    assert np.corrcoef(sa[live], sb[live])[0, 1] > 0.9  # measured 0.955 on 32 images
    assert sb.max() > 0.5 * sa.max()  # scores did not round to zero
